"""The sd_notify client speaks systemd's protocol to a real unix datagram socket, and is silent outside
systemd."""

from __future__ import annotations

import os
import secrets
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hflite.ops import systemd

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="unix sockets only")


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A socket where systemd would listen, named in $NOTIFY_SOCKET (a short path: AF_UNIX caps it)."""
    path = Path("/tmp") / f"hflite-notify-{secrets.token_hex(6)}.sock"
    sock = _receiver(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield sock
    finally:
        sock.close()
        path.unlink(missing_ok=True)


def test_ready_watchdog_status_and_stopping_arrive_as_datagrams(notify_socket: socket.socket):
    assert systemd.ready() is True
    assert notify_socket.recv(4096) == b"READY=1"
    assert systemd.watchdog() is True
    assert notify_socket.recv(4096) == b"WATCHDOG=1"
    assert systemd.status("bar 2024-12-06\nequity 100,230.50") is True
    assert notify_socket.recv(4096) == b"STATUS=bar 2024-12-06 equity 100,230.50"
    assert systemd.stopping() is True
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_a_long_status_is_cut_to_one_short_line(notify_socket: socket.socket):
    assert systemd.status("x" * 1000)
    assert notify_socket.recv(4096) == b"STATUS=" + b"x" * systemd.STATUS_MAX_CHARS


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract unix sockets are Linux only")
def test_an_abstract_namespace_socket_is_reached(monkeypatch: pytest.MonkeyPatch):
    name = f"hflite-notify-{secrets.token_hex(6)}"
    sock = _receiver("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("READY=1\nSTATUS=started") is True
        assert sock.recv(4096) == b"READY=1\nSTATUS=started"
    finally:
        sock.close()


def test_without_systemd_every_call_returns_false(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready() is False
    assert systemd.watchdog() is False
    assert systemd.status("idle") is False
    assert systemd.stopping() is False


def test_a_socket_that_is_gone_returns_false_without_raising(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert systemd.watchdog() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")  # systemd's VM form: not for a host service
    assert systemd.ready() is False


def test_the_watchdog_interval_comes_from_watchdog_usec(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval_s() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval_s() == 30.0


def test_no_or_foreign_watchdog_gives_none(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # set for another process
    assert systemd.watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    for bad in ("0", "-5", "thirty"):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert systemd.watchdog_interval_s() is None
