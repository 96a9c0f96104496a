"""The HTTP plumbing the ``ollama`` and ``openai`` backends share.

One ``httpx.Client`` per backend instance; every call has one wall-clock budget (``timeout_s``): httpx's
connect/read/write timeouts are set to it, and the body is read chunk by chunk with a deadline check
after each chunk, so a server that trickles bytes forever still times out. A single socket read that
stalls is bounded by httpx's read timeout, so the worst case is a little under twice the budget (a
chunk arriving just before the deadline, then silence); in practice a call ends within the budget plus
one chunk interval.

Failures map onto the ``LLMError`` family: httpx timeouts -> ``LLMTimeout``; connection refused, DNS,
protocol errors, HTTP status >= 400 -> ``LLMUnavailable`` (naming the backend, the URL path, the status
and the vendor's own error text, truncated); a body that is not JSON -> ``LLMBadReply``. Every message
goes through ``redact`` first (before any truncation), so an API key a server echoes back never reaches
an exception; keys and URL passwords are registered with ``hflite.redact`` for the log lines too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self

import httpx

from hflite import redact as redaction
from hflite.ai.llm.base import LLMBadReply, LLMError, LLMTimeout, LLMUnavailable

__all__ = ["HTTPBackend", "ResponseBody", "as_int", "as_obj", "redact", "vendor_error"]

#: How much of a vendor's error text goes into an exception message.
ERROR_CHARS = 300
#: The largest body we read (a reply of a few hundred tokens is a few kB).
MAX_BODY_BYTES = 16 * 1024 * 1024
#: HTTP statuses that will fail the same way if the identical call is repeated.
_NOT_RETRYABLE = frozenset({400, 401, 403, 404, 405, 413, 422})
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret (however short), anything after a ``Bearer`` keyword, registered secrets
    and key parameters (``hflite.redact``) replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, redaction.MASK)
    return redaction.redact(_BEARER.sub(r"\1***", text))


def vendor_error(raw: bytes) -> str:
    """The error text of an error body in any of the usual shapes (Ollama ``{"error": "..."}``, OpenAI
    ``{"error": {"message": ...}}``, ``{"message": ...}``, ``{"detail": ...}``), else the raw text."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            err = err.get("message") or err
        for value in (err, data.get("message"), data.get("detail")):
            if isinstance(value, str) and value:
                return value
            if value:
                return json.dumps(value)
    return text


def as_obj(value: Any, what: str, backend: str) -> dict[str, Any]:
    """``value`` if it is a JSON object, else ``LLMBadReply`` naming ``what`` was expected."""
    if not isinstance(value, dict):
        raise LLMBadReply(f"{backend}: expected {what} to be a JSON object, got {type(value).__name__}")
    return value


def as_int(value: Any) -> int:
    """A token count: ints (and integral floats) as they are, anything else (missing, null) as 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return 0


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context (CA bundle loaded once) shared by every backend's client; building it is most of
    the cost of a new ``httpx.Client``."""
    return httpx.create_ssl_context()


def _truncate(text: str, limit: int = ERROR_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ResponseBody:
    """An open response whose body is read under the call's deadline."""

    def __init__(self, response: httpx.Response, deadline: float, owner: HTTPBackend, where: str) -> None:
        self.response = response
        self._deadline = deadline
        self._owner = owner
        self._where = where

    def chunks(self) -> Iterator[bytes]:
        """The body's bytes as they arrive; ``LLMTimeout`` once the deadline has passed."""
        total = 0
        for chunk in self.response.iter_bytes():
            if time.perf_counter() > self._deadline:
                raise self._owner.timeout_error(self._where, "while reading the reply")
            total += len(chunk)
            if total > MAX_BODY_BYTES:
                raise LLMBadReply(
                    f"{self._owner.backend}: {self._where}: reply larger than {MAX_BODY_BYTES} bytes"
                )
            yield chunk

    def read(self) -> bytes:
        """The whole body."""
        return b"".join(self.chunks())

    def lines(self) -> Iterator[str]:
        """The body split into lines (``\\n`` or ``\\r\\n``), decoded as UTF-8, as they arrive."""
        pending = b""
        for chunk in self.chunks():
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.decode("utf-8", "replace").rstrip("\r")
        if pending:
            yield pending.decode("utf-8", "replace").rstrip("\r")

    def json(self) -> Any:
        """The body parsed as JSON; ``LLMBadReply`` when it is not."""
        return self._owner.parse_json(self.read(), self._where)


class HTTPBackend:
    """Base of the HTTP backends: the client, the deadline, the error mapping and the redaction."""

    backend: str = "http"

    def __init__(self, base_url: str, model: str, *, client: httpx.Client | None = None) -> None:
        self.model = model
        self._base = base_url.rstrip("/")
        with contextlib.suppress(httpx.InvalidURL):
            redaction.register(httpx.URL(self._base).password)  # a proxy's password in the URL
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(verify=_tls_context())

    # -- hooks -----------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        """Headers sent with every call (the OpenAI backend adds ``Authorization``)."""
        return {}

    def _secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in an exception message."""
        return ()

    # -- life cycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the HTTP client (only when this backend created it; an injected one is the caller's)."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self._origin()!r}, model={self.model!r})"

    def _origin(self) -> str:
        """The base URL without any user:password part or key parameter (safe to show)."""
        try:
            url = httpx.URL(self._base)
        except httpx.InvalidURL:
            return "<invalid url>"
        return redaction.sanitize_url(str(url.copy_with(username=None, password=None)))

    # -- errors ----------------------------------------------------------------------------------
    def _say(self, text: str) -> str:
        return redact(text, self._secrets())

    def timeout_error(self, where: str, detail: str) -> LLMTimeout:
        """``LLMTimeout`` for ``where`` (``"POST /api/chat"``)."""
        return LLMTimeout(self._say(f"{self.backend}: {where} at {self._origin()}: timed out {detail}"))

    def unavailable(self, where: str, detail: str, status: int | None = None) -> LLMUnavailable:
        """``LLMUnavailable`` for ``where``; deterministic 4xx refusals are marked not retryable."""
        head = f"{self.backend}: {where} at {self._origin()}"
        if status is not None:
            head += f": HTTP {status}"
        err = LLMUnavailable(self._say(f"{head}: {_truncate(self._say(detail))}" if detail else head))
        if status in _NOT_RETRYABLE:
            err.retryable = False
        return err

    def bad_reply(self, where: str, detail: str) -> LLMBadReply:
        """``LLMBadReply`` for ``where``."""
        return LLMBadReply(self._say(f"{self.backend}: {where}: {_truncate(self._say(detail))}"))

    def parse_json(self, raw: bytes | str, where: str) -> Any:
        """``raw`` parsed as JSON; ``LLMBadReply`` quoting its start when it is not."""
        try:
            return json.loads(raw)
        except ValueError as exc:
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            snippet = self._say(text[:1000])[:120]  # redacted before it is cut
            raise self.bad_reply(where, f"reply is not JSON ({detail}): {snippet!r}") from None

    # -- calls -----------------------------------------------------------------------------------
    @contextmanager
    def open(
        self, method: str, path: str, body: dict[str, Any] | None, timeout_s: float
    ) -> Iterator[ResponseBody]:
        """Send one request and yield its (2xx) response for reading under the call's deadline.

        HTTP status >= 400 raises ``LLMUnavailable`` with the vendor's error text; transport failures
        and timeouts raised while the caller reads the body are mapped too.
        """
        where = f"{method} {path}"
        deadline = time.perf_counter() + timeout_s
        try:
            with self._client.stream(
                method,
                self._base + path,
                json=body,
                headers=self._headers(),
                timeout=httpx.Timeout(timeout_s),
            ) as response:
                reader = ResponseBody(response, deadline, self, where)
                if response.status_code >= 400:
                    raw = b""
                    for chunk in reader.chunks():
                        raw += chunk
                        if len(raw) > 64 * 1024:
                            break
                    raise self.unavailable(where, vendor_error(raw), response.status_code)
                yield reader
        except LLMError:
            raise
        except httpx.TimeoutException as exc:
            raise self.timeout_error(where, f"after {timeout_s:g} s ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise self.unavailable(where, f"{type(exc).__name__}: {exc}") from None
        except httpx.InvalidURL as exc:
            raise self.unavailable(where, f"invalid URL: {exc}") from None
