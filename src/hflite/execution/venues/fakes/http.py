"""The HTTP plumbing the local fake brokers share (``fakebroker``, ``fakes.alpaca``, ``fakes.binance``,
``fakes.oanda``): a threading server that keeps quiet, a handler that tracks its connection and sends
answers, an ``HttpApp`` that starts, tracks and promptly stops one, and ``wait_until_stopped`` for
the ``serve`` functions the CLI calls.

Each fake subclasses ``Server`` (to type its ``app``), ``Handler`` (its routes) and ``HttpApp``
(its state and checks)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["Handler", "HttpApp", "Server", "wait_until_stopped"]


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    app: HttpApp


class Handler(BaseHTTPRequestHandler):
    """One connection: tracked by the app while open (``stop`` closes it), no Nagle wait, no log."""

    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        return  # quiet: tests start many servers

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):  # headers and body are separate writes: no Nagle wait
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.app._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.app._track(self.connection, add=False)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _drop(self) -> None:
        """Close the connection without an answer (a dropped request)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _extra_headers(self) -> Mapping[str, str]:
        """Headers every answer carries (before the answer's own)."""
        return {}

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send(self, status: int, data: bytes, ctype: str, headers: Mapping[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in {**self._extra_headers(), **(headers or {})}.items():
                self.send_header(k, v)
            self.end_headers()
            if data:
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True


class HttpApp(ABC):
    """Serves ``handler`` on ``host:port`` (0 = a free port) in a background thread (``_start_http``)
    and stops promptly (``_stop_http``: every tracked connection is shut down). A context manager
    around the subclass's ``start`` / ``stop``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._httpd: Server | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @abstractmethod
    def start(self) -> Self:
        """Bind and serve (the subclass calls ``_start_http`` and starts its own threads)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop serving (the subclass wakes its waiters and calls ``_stop_http``)."""

    def _start_http(self, server: type[Server], handler: type[Handler], name: str) -> None:
        """Bind (``url`` is valid afterwards) and serve in a daemon thread called ``name``."""
        httpd = server((self.host, self.port), handler)
        httpd.app = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        serving = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )
        serving.start()
        self._threads = [serving]

    def _stop_http(self) -> None:
        """Stop serving, close every open connection, and wait for the threads (``_threads``)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        for t in self._threads:
            t.join(timeout=2.0)

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._conns_lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until_stopped(ready: threading.Event | None, stop: threading.Event | None) -> None:
    """For a ``serve`` function: set ``ready``, then wait for ``stop`` (or Ctrl-C)."""
    if ready is not None:
        ready.set()
    waiter = stop or threading.Event()
    with contextlib.suppress(KeyboardInterrupt):
        while not waiter.wait(0.5):
            pass
