"""Local servers the alert tests deliver to, on 127.0.0.1 only: an HTTP webhook (apprise's ``json://`` and
``form://``, and a Discord- or Telegram-compatible endpoint) and an SMTP server (aiosmtpd) for email and
email-to-SMS gateways.

Each records what it received with the wall-clock time, and can be scripted: a webhook answers with the
next status of ``statuses`` (then ``default_status``) and can hold every request ``delay_s`` seconds (a
channel that never answers in time); the SMTP server checks the login it is given.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    """A TCP port nothing listens on right now (for servers that cannot bind port 0 themselves)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A port on 127.0.0.1 where a connection is refused (an unreachable channel)."""
    return free_port()


@dataclass
class Hit:
    """One request a webhook server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived

    @property
    def json(self) -> Any:
        return json.loads(self.body or b"null")

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class WebhookServer:
    """An HTTP server on 127.0.0.1 that records each request and answers as scripted."""

    statuses: list[int] = field(default_factory=list)
    default_status: int = 200
    delay_s: float = 0.0
    answer: bytes = b'{"ok": true}'
    hits: list[Hit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._script: deque[int] = deque(self.statuses)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._release = threading.Event()  # set at stop: a held request ends at once
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                hit = Hit("POST", self.path, dict(self.headers.items()), body, time.monotonic())
                status = server._arrive(hit)
                if server.delay_s:
                    server._release.wait(server.delay_s)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(server.answer)))
                    self.end_headers()
                    self.wfile.write(server.answer)
                except OSError:
                    pass  # the client gave up waiting (the timeout under test)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def _arrive(self, hit: Hit) -> int:
        with self._arrived:
            self.hits.append(hit)
            self._arrived.notify_all()
            return self._script.popleft() if self._script else self.default_status

    def url(self, scheme: str = "json", path: str = "/hook") -> str:
        """The apprise URL of this server (``json://127.0.0.1:PORT/hook``)."""
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Hit]:
        """The requests once at least ``count`` arrived (or all of them at ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.hits) < count and time.monotonic() < deadline:
                self._arrived.wait(deadline - time.monotonic())
            return list(self.hits)

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


@dataclass
class Mail:
    """One message the SMTP server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    at: float

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain", "html"))
        return "" if part is None else str(part.get_content())


class SmtpServer:
    """aiosmtpd on 127.0.0.1 with plain SMTP (no TLS) that checks the login ``user``/``password``
    apprise sends (a wrong one is refused, and the delivery fails)."""

    def __init__(self, user: str, password: str, *, refuse_logins: int = 0) -> None:
        self.user = user
        self.password = password
        self.refuse_logins = refuse_logins  # the first n logins are refused even when right
        self.mails: list[Mail] = []
        self.logins: list[tuple[str, bool]] = []
        self._arrived = threading.Condition()
        self.port = free_port()
        self.controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self._authenticate,
            auth_exclude_mechanism=["LOGIN"],  # PLAIN only: one login per connection
            auth_require_tls=False,  # local test server: apprise's mode=insecure logs in over plain SMTP
        )

    def _authenticate(
        self, _server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == self.user
            and data.password.decode() == self.password
        )
        if ok and self.refuse_logins > 0:
            self.refuse_logins -= 1
            ok = False
        self.logins.append((data.login.decode() if isinstance(data, LoginPassword) else "?", ok))
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        mail = Mail(envelope.mail_from, list(envelope.rcpt_tos), message, time.monotonic())
        with self._arrived:
            self.mails.append(mail)
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def url(self, to: str, *, password: str | None = None, sender: str = "hflite@example.test") -> str:
        """An apprise ``mailto://`` URL for plain SMTP here: ``mode=insecure`` (no STARTTLS, no SSL),
        the login in the userinfo, ``from`` and ``to`` as query arguments (apprise's email plugin)."""
        pw = self.password if password is None else password
        return f"mailto://{self.user}:{pw}@127.0.0.1:{self.port}?mode=insecure&from={sender}&to={to}"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Mail]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.mails) < count and time.monotonic() < deadline:
                self._arrived.wait(deadline - time.monotonic())
            return list(self.mails)

    def __enter__(self) -> SmtpServer:
        logging.getLogger("mail.log").setLevel(logging.ERROR)  # the fake server's own chatter
        self.controller.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.controller.stop()
