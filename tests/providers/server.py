"""A local HTTP server on 127.0.0.1 that answers like a vendor, from recorded payload fixtures.

Routes match a path (regex) and optionally query parameters; each route answers with a status,
body and headers, and can be limited to its first ``times`` hits (then the next matching route
answers), which scripts sequences such as "429 once, then success".
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@dataclass
class Route:
    path: str  # regex matched against the URL path
    body: bytes | str | dict | list = b""
    status: int = 200
    query: dict[str, str] = field(default_factory=dict)  # required query values
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = None  # answer only this many times
    content_type: str = "application/json"
    hits: int = 0

    def matches(self, path: str, query: dict[str, list[str]]) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if not re.fullmatch(self.path, path):
            return False
        return all(query.get(k, [None])[0] == v for k, v in self.query.items())

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


def fixture(vendor: str, name: str) -> bytes:
    """The bytes of ``fixtures/<vendor>/<name>``."""
    return (FIXTURES / vendor / name).read_bytes()


class FixtureServer:
    """``with FixtureServer(routes) as srv: srv.url``; ``srv.requests`` lists (path, query) seen."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                server.requests.append((parts.path, query))
                for route in server.routes:
                    if route.matches(parts.path, query):
                        route.hits += 1
                        body = route.payload()
                        self.send_response(route.status)
                        self.send_header("Content-Type", route.content_type)
                        self.send_header("Content-Length", str(len(body)))
                        for k, v in route.headers.items():
                            self.send_header(k, v)
                        self.end_headers()
                        self.wfile.write(body)
                        return
                body = b'{"error": "no fixture route for this request"}'
                self.send_response(404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FixtureServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
