"""Talk to systemd from ``hflite run``: readiness, the watchdog ping, a status line, stopping.

The sd_notify protocol is one datagram of ``KEY=value`` lines sent to the unix socket named in
``$NOTIFY_SOCKET`` (a leading ``@`` names a socket in the abstract namespace). Under a unit with
``Type=notify`` systemd waits for ``READY=1`` before it counts the service as started, and with
``WatchdogSec=`` it restarts the service when ``WATCHDOG=1`` stops arriving: a hung trading loop is
restarted, not left silent. Outside systemd (no ``$NOTIFY_SOCKET``) every call returns False and does
nothing, so the runtime calls these unconditionally from its heartbeat. No library is needed: the
protocol is a few lines, and the ``systemd`` Python bindings need a C build.
"""

from __future__ import annotations

import os
import socket

from hflite import logs

__all__ = ["notify", "ready", "status", "stopping", "watchdog", "watchdog_interval_s"]

log = logs.get("hflite.ops.systemd")

#: systemd truncates a status line it shows; longer text is cut here so a datagram stays small.
STATUS_MAX_CHARS = 200


def _address(name: str) -> str | None:
    """The socket address of ``$NOTIFY_SOCKET``: a path, or an abstract name (``@x`` -> ``\\0x``)."""
    if name.startswith("@"):
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    return None  # e.g. vsock:...: systemd's VM form, which a service on this host never gets


def notify(state: str) -> bool:
    """Send ``state`` (``KEY=value`` lines) to systemd; True when sent, False when not under systemd
    (or the socket refused it: the runtime must go on trading either way, so this never raises)."""
    name = os.environ.get("NOTIFY_SOCKET", "")
    if not name or not hasattr(socket, "AF_UNIX"):
        return False
    address = _address(name)
    if address is None:
        log.debug("systemd.notify.unsupported_socket", socket=name)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.debug("systemd.notify.failed", socket=name, error=str(exc))
        return False
    return True


def ready() -> bool:
    """Startup is done (the journal is open and the first reconciliation passed): ``READY=1``."""
    return notify("READY=1")


def watchdog() -> bool:
    """The loop is alive: ``WATCHDOG=1``. Call it at least every ``watchdog_interval_s() / 2``."""
    return notify("WATCHDOG=1")


def stopping() -> bool:
    """Shutdown has begun (journal being closed): ``STOPPING=1``, so systemd waits instead of killing."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """A one-line status that ``systemctl status`` shows, e.g. "bar 2024-12-06 equity 100,230"."""
    line = " ".join(text.split())[:STATUS_MAX_CHARS]
    return notify(f"STATUS={line}")


def watchdog_interval_s() -> float | None:
    """The watchdog timeout systemd set (``$WATCHDOG_USEC``) in seconds, or None when there is none,
    when it is malformed, or when ``$WATCHDOG_PID`` names another process (the ping is not ours)."""
    raw = os.environ.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None
