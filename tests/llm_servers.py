"""A scriptable local fake of Ollama's and OpenAI's HTTP APIs, for offline tests of the LLM backends and
of anything built on them (retry, fallback, budgets).

One ``FakeLLMServer`` listens on 127.0.0.1 (a free port, a daemon thread) and speaks both APIs:
Ollama's ``POST /api/chat``, ``POST /api/generate``, ``GET /api/tags`` and OpenAI's
``POST /v1/chat/completions``, ``GET /v1/models``. Reply payloads are built from the vendor-documented
examples in ``tests/fixtures/llm/*.json`` (each names its source under ``_source``); the fake fills in
the model, the content and the token counts.

Each request consumes the next behaviour of the script (``server.script([...])``); once the script is
used up, ``server.behaviour`` (default ``"ok"``) answers. Behaviours:

``ok``              a good reply whose content is ``server.reply_content``; streamed (NDJSON for Ollama,
                    SSE for OpenAI) when the request asks (Ollama streams unless ``"stream": false``)
``stream``          the same, always in the vendor's streaming format
``bad_schema``      a good envelope whose content is JSON violating the stance schema (``BAD_SCHEMA``)
``slow``            waits ``server.slow_s`` (5 s) before answering ``ok``
``trickle``         sends headers, then an empty streaming chunk (or a space) every ``trickle_every_s``
                    (0.2 s), forever
``500`` / ``404`` / ``401``  the vendor's error body with that status (``401`` from OpenAI echoes the
                    ``Authorization`` header it received, unmasked, to test redaction)
``malformed``       status 200 and a body that is not JSON (a truncated object)
``missing_fields``  status 200, valid JSON without the documented fields
``stream_error``    streams one chunk, then the vendor's mid-stream error object

Every request is recorded in ``server.requests`` (method, path, lower-cased headers, parsed JSON body,
the behaviour it got). Example::

    def test_retry_then_ok(openai_server):
        openai_server.script(["500", "ok"])
        llm = OpenAICompatLLM(OpenAIConfig(url=openai_server.url))
        ...
        assert openai_server.requests[-1].body["seed"] == 7
"""

from __future__ import annotations

import copy
import json
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import pytest

__all__ = [
    "BAD_SCHEMA",
    "BEHAVIOURS",
    "FIXTURES",
    "GOOD_REPLY",
    "STANCE_SCHEMA",
    "FakeLLMServer",
    "RecordedRequest",
    "closed_port_url",
    "load_fixture",
    "ollama_server",
    "openai_server",
]

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "llm"

BEHAVIOURS = frozenset(
    {
        "ok",
        "stream",
        "bad_schema",
        "slow",
        "trickle",
        "500",
        "404",
        "401",
        "malformed",
        "missing_fields",
        "stream_error",
    }
)

#: The schema the analyst roles ask for (the gguf test uses it too).
STANCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "stance": {"type": "string", "enum": ["bullish", "bearish", "neutral"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "reasons": {
            "type": "array",
            "items": {"type": "string", "maxLength": 160},
            "minItems": 1,
            "maxItems": 3,
        },
        "risks": {"type": "array", "items": {"type": "string", "maxLength": 160}, "maxItems": 3},
    },
    "required": ["stance", "confidence", "reasons", "risks"],
    "additionalProperties": False,
}
#: A reply matching ``STANCE_SCHEMA`` (the default ``reply_content``).
GOOD_REPLY = (
    '{"stance": "bullish", "confidence": 0.72, "reasons": ["price above the 200-day average"], "risks": []}'
)
#: Valid JSON that violates ``STANCE_SCHEMA`` (the ``bad_schema`` content).
BAD_SCHEMA = '{"stance": "maybe", "confidence": 7, "reasons": [], "risks": "none"}'

Vendor = Literal["ollama", "openai"]


def load_fixture(name: str) -> dict[str, Any]:
    """``tests/fixtures/llm/<name>.json`` without its ``_source`` note."""
    data = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    data.pop("_source", None)
    return dict(data)


def closed_port_url(path: str = "") -> str:
    """An http://127.0.0.1 URL on a port nothing listens on (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # the parsed JSON body (None when empty or not JSON)
    raw: bytes
    behaviour: str


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class FakeLLMServer:
    """A local Ollama + OpenAI API fake; use as a context manager or via ``start()`` / ``stop()``."""

    def __init__(
        self,
        vendor: Vendor = "ollama",
        *,
        reply_content: str | Callable[[Any], str] = GOOD_REPLY,
        behaviour: str = "ok",
        slow_s: float = 5.0,
        trickle_every_s: float = 0.2,
        chunk_chars: int = 9,
    ) -> None:
        self.vendor: Vendor = vendor
        self.reply_content = reply_content
        self.behaviour = behaviour
        self.slow_s = slow_s
        self.trickle_every_s = trickle_every_s
        self.chunk_chars = chunk_chars
        self.requests: list[RecordedRequest] = []
        self._queue: deque[str] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.fixtures = {
            name: load_fixture(name)
            for name in (
                "ollama_chat",
                "ollama_generate",
                "ollama_tags",
                "ollama_error",
                "openai_chat_completion",
                "openai_models",
                "openai_error",
            )
        }

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> FakeLLMServer:
        """Listen on a free 127.0.0.1 port in a daemon thread."""
        self._stop.clear()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.02,), name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end slow/trickling answers, drop open connections."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.drop_connections()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the fake server is not running")
        return int(self._httpd.server_address[1])

    @property
    def ollama_url(self) -> str:
        """What ``[llm.ollama] url`` would be."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        """What ``[llm.openai] url`` would be (ends with /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def url(self) -> str:
        """The base URL of this server's vendor."""
        return self.ollama_url if self.vendor == "ollama" else self.openai_url

    # -- scripting -------------------------------------------------------------------------------
    def script(self, behaviours: Iterable[str]) -> None:
        """Answer the next requests with these behaviours, in order (replaces any script left)."""
        items = list(behaviours)
        unknown = [b for b in items if b not in BEHAVIOURS]
        if unknown:
            raise ValueError(f"unknown behaviours {unknown}; known: {sorted(BEHAVIOURS)}")
        with self._lock:
            self._queue = deque(items)

    def content_for(self, body: Any) -> str:
        """The reply's content: ``reply_content``, or what it returns for the request body when it is
        a function (one server answering several roles)."""
        return self.reply_content(body) if callable(self.reply_content) else self.reply_content

    def next_behaviour(self) -> str:
        """The behaviour for the request that just arrived (the script's next, else ``behaviour``)."""
        with self._lock:
            return self._queue.popleft() if self._queue else self.behaviour

    @property
    def last(self) -> RecordedRequest:
        """The most recent request."""
        with self._lock:
            return self.requests[-1]

    def bodies(self, path: str | None = None) -> list[Any]:
        """The JSON bodies received (at ``path`` only, when given)."""
        with self._lock:
            return [r.body for r in self.requests if path is None or r.path == path]

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when the server is stopping."""
        return self._stop.wait(seconds)

    # -- payloads --------------------------------------------------------------------------------
    def reply(self, vendor: Vendor, kind: str, body: Any, content: str) -> dict[str, Any]:
        """A complete non-streamed reply of ``kind`` (chat | generate | models)."""
        model = body.get("model") if isinstance(body, dict) else None
        if kind == "models":
            name = "ollama_tags" if vendor == "ollama" else "openai_models"
            return copy.deepcopy(self.fixtures[name]["reply"])
        if vendor == "ollama":
            out = copy.deepcopy(self.fixtures[f"ollama_{kind}"]["reply"])
            if kind == "chat":
                out["message"]["content"] = content
            else:
                out["response"] = content
            out["eval_count"] = _tokens(content)
        else:
            out = copy.deepcopy(self.fixtures["openai_chat_completion"]["reply"])
            out["choices"][0]["message"]["content"] = content
            usage = out["usage"]
            usage["completion_tokens"] = _tokens(content)
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if model:
            out["model"] = model
        return out

    def stream_items(self, vendor: Vendor, kind: str, body: Any, content: str) -> list[dict[str, Any]]:
        """The objects of a streamed reply, in order (without OpenAI's ``[DONE]`` sentinel)."""
        model = body.get("model") if isinstance(body, dict) else None
        pieces = [content[i : i + self.chunk_chars] for i in range(0, len(content), self.chunk_chars)]
        items: list[dict[str, Any]] = []
        if vendor == "ollama":
            fx = self.fixtures[f"ollama_{kind}"]
            for piece in pieces:
                chunk = copy.deepcopy(fx["stream_chunk"])
                if kind == "chat":
                    chunk["message"]["content"] = piece
                else:
                    chunk["response"] = piece
                items.append(chunk)
            final = copy.deepcopy(fx["stream_final"])
            final["eval_count"] = _tokens(content)
            items.append(final)
        else:
            fx = self.fixtures["openai_chat_completion"]
            for piece in pieces:
                chunk = copy.deepcopy(fx["stream_chunk"])
                chunk["choices"][0]["delta"]["content"] = piece
                items.append(chunk)
            items.append(copy.deepcopy(fx["stream_final"]))
            options = body.get("stream_options") if isinstance(body, dict) else None
            if isinstance(options, dict) and options.get("include_usage"):
                usage_chunk = copy.deepcopy(fx["stream_usage"])
                usage = usage_chunk["usage"]
                usage["completion_tokens"] = _tokens(content)
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                items.append(usage_chunk)
        if model:
            for item in items:
                item["model"] = model
        return items

    def error(self, vendor: Vendor, status: str, headers: dict[str, str]) -> dict[str, Any]:
        """The vendor's error body for ``status`` (500 | 404 | 401 | stream)."""
        out = copy.deepcopy(self.fixtures[f"{vendor}_error"][status])
        if vendor == "openai" and status == "401":
            auth = headers.get("authorization", "")
            out["error"]["message"] = out["error"]["message"].replace("{authorization}", auth)
        return out


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its fake, tracks its connections and keeps stderr quiet."""

    daemon_threads = True
    fake: FakeLLMServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Shut down every open connection (unblocks handler threads waiting on keep-alive reads)."""
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts under test) are expected: say nothing."""


_ROUTES: dict[str, tuple[Vendor, str]] = {
    "/api/chat": ("ollama", "chat"),
    "/api/generate": ("ollama", "generate"),
    "/api/tags": ("ollama", "models"),
    "/v1/chat/completions": ("openai", "chat"),
    "/v1/models": ("openai", "models"),
}


def _route(path: str) -> tuple[Vendor, str] | None:
    """``(vendor, kind)`` for a known endpoint path."""
    return _ROUTES.get(path.split("?", 1)[0].rstrip("/"))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection ends after this
    disable_nagle_algorithm = True  # small writes go out at once (no 40 ms delayed-ACK stalls)
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    # -- dispatch --------------------------------------------------------------------------------
    def _serve(self, method: str) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        route = _route(self.path)
        behaviour = fake.next_behaviour() if route else "unrouted"
        fake.record(RecordedRequest(method, self.path, headers, body, raw, behaviour))
        try:
            if route is None:
                self._send(404, b'{"error": "no such endpoint"}')
                return
            vendor, kind = route
            self._answer(fake, vendor, kind, behaviour, body, headers)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True

    def _answer(
        self,
        fake: FakeLLMServer,
        vendor: Vendor,
        kind: str,
        behaviour: str,
        body: Any,
        headers: dict[str, str],
    ) -> None:
        wants_stream = kind != "models" and isinstance(body, dict) and body.get("stream", vendor == "ollama")
        if behaviour == "slow":
            if fake.wait(fake.slow_s):
                return
            behaviour = "ok"
        if behaviour in ("500", "404", "401"):
            self._send_json(int(behaviour), fake.error(vendor, behaviour, headers))
        elif behaviour == "trickle":
            self._trickle(fake, vendor, bool(wants_stream))
        elif behaviour == "malformed":
            self._malformed(vendor, bool(wants_stream))
        elif behaviour == "missing_fields":
            self._send_json(200, {"object": "chat.completion"} if vendor == "openai" else {"done": True})
        elif kind == "models":
            self._send_json(200, fake.reply(vendor, kind, body, ""))
        elif behaviour == "stream_error":
            items = fake.stream_items(vendor, kind, body, fake.content_for(body))[:1]
            items.append(fake.error(vendor, "stream", headers))
            self._stream(vendor, items, done=False)
        else:
            content = BAD_SCHEMA if behaviour == "bad_schema" else fake.content_for(body)
            if behaviour == "stream" or wants_stream:
                self._stream(vendor, fake.stream_items(vendor, kind, body, content), done=True)
            else:
                self._send_json(200, fake.reply(vendor, kind, body, content))

    # -- writers ---------------------------------------------------------------------------------
    def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _send_json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode())

    def _start_chunked(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    @staticmethod
    def _frame(vendor: Vendor, obj: Any) -> bytes:
        """One streamed object: an NDJSON line (Ollama) or an SSE ``data:`` event (OpenAI)."""
        text = obj if isinstance(obj, str) else json.dumps(obj)
        return f"{text}\n".encode() if vendor == "ollama" else f"data: {text}\n\n".encode()

    def _stream(self, vendor: Vendor, items: list[Any], *, done: bool) -> None:
        self._start_chunked("application/x-ndjson" if vendor == "ollama" else "text/event-stream")
        for item in items:
            self._chunk(self._frame(vendor, item))
        if done and vendor == "openai":
            self._chunk(self._frame(vendor, "[DONE]"))
        self._end_chunked()

    def _trickle(self, fake: FakeLLMServer, vendor: Vendor, streamed: bool) -> None:
        """Headers, then a keep-alive piece every ``trickle_every_s`` until the client or server quits."""
        if streamed:
            self._start_chunked("application/x-ndjson" if vendor == "ollama" else "text/event-stream")
            if vendor == "ollama":
                piece = self._frame(vendor, {"model": "m", "message": {"role": "assistant", "content": ""}})
            else:
                piece = self._frame(vendor, {"object": "chat.completion.chunk", "choices": [{"delta": {}}]})
        else:
            self._start_chunked("application/json")
            piece = b" "
        while not fake.wait(fake.trickle_every_s):
            self._chunk(piece)
        self.close_connection = True

    def _malformed(self, vendor: Vendor, streamed: bool) -> None:
        if not streamed:
            self._send(200, b'{"model": "m", "message": {"content": "trunc')
        elif vendor == "ollama":
            self._stream(vendor, ['{"model": "m", "message": {"content": "trunc'], done=False)
        else:
            self._stream(vendor, ['{"choices": [{"delta": {"content": "trunc'], done=True)


@pytest.fixture
def ollama_server() -> Iterator[FakeLLMServer]:
    """A running fake whose ``url`` is Ollama's base URL."""
    with FakeLLMServer("ollama") as server:
        yield server


@pytest.fixture
def openai_server() -> Iterator[FakeLLMServer]:
    """A running fake whose ``url`` is an OpenAI-compatible base URL (ending with /v1)."""
    with FakeLLMServer("openai") as server:
        yield server
