"""The ``openai`` backend: any OpenAI-compatible Chat Completions server (llama.cpp server, vLLM, LM
Studio, Ollama's ``/v1``, hosted endpoints) over httpx.

Payloads follow OpenAI's API reference (https://platform.openai.com/docs/api-reference/chat and
https://platform.openai.com/docs/api-reference/models, errors per
https://platform.openai.com/docs/guides/error-codes):

- ``POST {url}/chat/completions`` ``{"model", "messages", "max_tokens", "temperature", "seed",
  "stream", "response_format"}``; ``response_format`` is ``{"type": "json_schema", "json_schema":
  {"name": "reply", "schema": ..., "strict": true}}`` when the request has a schema (or
  ``{"type": "json_object"}`` with ``[llm.openai] json_schema = false``, for servers without
  structured outputs). The reply's text is ``choices[0].message.content``, its end
  ``choices[0].finish_reason``, its counts ``usage.prompt_tokens`` / ``usage.completion_tokens``.
- Streamed (``"stream": true``, ``"stream_options": {"include_usage": true}``), the reply is
  Server-Sent Events: ``data: {chunk}`` lines with ``choices[0].delta.content`` pieces, a last chunk
  with empty ``choices`` and the ``usage``, then ``data: [DONE]``.
- ``GET {url}/models`` -> ``{"object": "list", "data": [{"id", "object", "created", "owned_by"}]}``.
- ``Authorization: Bearer <key>`` only when ``[llm.openai] api_key`` is set; errors are HTTP 4xx/5xx
  with ``{"error": {"message", "type", "param", "code"}}``.

The key lives in a ``SecretStr`` and is only unwrapped into the request header; every exception message
is redacted (a server that echoes the header back in an error body cannot leak it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx

from hflite import redact as redaction
from hflite.ai.llm._http import HTTPBackend, ResponseBody, as_int, as_obj
from hflite.ai.llm.base import LLMReply, LLMRequest, ModelInfo
from hflite.ai.llm.config import OpenAIConfig

__all__ = ["OpenAICompatLLM"]

_DONE = "[DONE]"


class OpenAICompatLLM(HTTPBackend):
    """A model behind an OpenAI-compatible ``/v1`` API (``[llm.openai] url, model, api_key``)."""

    backend = "openai"

    def __init__(self, cfg: OpenAIConfig, *, client: httpx.Client | None = None) -> None:
        super().__init__(cfg.url, cfg.model, client=client)
        self._key = cfg.api_key
        redaction.register(cfg.api_key)  # log lines and messages mask it from now on
        self.json_schema = cfg.json_schema

    def _headers(self) -> dict[str, str]:
        key = self._key.get_secret_value() if self._key is not None else ""
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _secrets(self) -> tuple[str, ...]:
        key = self._key.get_secret_value() if self._key is not None else ""
        return (key,) if key else ()

    # -- calls -----------------------------------------------------------------------------------
    def chat(self, request: LLMRequest) -> LLMReply:
        """One ``POST /chat/completions`` call (streamed when ``request.stream``)."""
        where = "POST /chat/completions"
        start = time.perf_counter()
        with self.open("POST", "/chat/completions", self._body(request), request.timeout_s) as resp:
            if request.stream:
                text, model, finish, usage = self._read_stream(resp, where)
            else:
                text, model, finish, usage = self._read_reply(resp.json(), where)
        latency = time.perf_counter() - start
        return LLMReply(
            text=text,
            model=model or self.model,
            backend=self.backend,
            prompt_tokens=as_int(usage.get("prompt_tokens")),
            completion_tokens=as_int(usage.get("completion_tokens")),
            latency_s=latency,
            finish_reason=finish,
        )

    def models(self, timeout_s: float = 5.0) -> list[ModelInfo]:
        """The models the server offers (``GET /models``)."""
        where = "GET /models"
        with self.open("GET", "/models", None, timeout_s) as resp:
            data = as_obj(resp.json(), "the /models reply", self.backend)
        entries = data.get("data")
        if not isinstance(entries, list):
            raise self.bad_reply(where, "no 'data' list")
        out: list[ModelInfo] = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise self.bad_reply(where, "a model has no 'id'")
            details = {k: v for k, v in entry.items() if k not in ("id", "object")}
            out.append(ModelInfo(entry["id"], None, details))
        return out

    # -- internals -------------------------------------------------------------------------------
    def _body(self, request: LLMRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
            "stream": request.stream,
        }
        if request.stream:
            body["stream_options"] = {"include_usage": True}
        if request.schema is not None:
            if self.json_schema:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "reply", "schema": request.schema, "strict": True},
                }
            else:
                body["response_format"] = {"type": "json_object"}
        return body

    def _read_reply(self, data: Any, where: str) -> tuple[str, str, str, dict[str, Any]]:
        """``(text, model, finish_reason, usage)`` of a non-streamed reply."""
        obj = as_obj(data, f"the {where} reply", self.backend)
        if "error" in obj:
            raise self.unavailable(where, _error_text(obj["error"]))
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self.bad_reply(where, "no choices[0] in the reply")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise self.bad_reply(where, "no choices[0].message in the reply")
        content = message.get("content")
        if not isinstance(content, str):
            refusal = message.get("refusal")
            if isinstance(refusal, str) and refusal:
                raise self.bad_reply(where, f"the model refused: {refusal}")
            raise self.bad_reply(where, "no choices[0].message.content in the reply")
        usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        return content, _str(obj.get("model")), _str(choices[0].get("finish_reason")), usage or {}

    def _read_stream(self, resp: ResponseBody, where: str) -> tuple[str, str, str, dict[str, Any]]:
        """Join the SSE chunks' ``delta.content``; ``(text, model, finish_reason, usage)``."""
        parts: list[str] = []
        model = finish = ""
        usage: dict[str, Any] = {}
        for data in _sse_data(resp):
            if data == _DONE:
                return "".join(parts), model, finish, usage
            chunk = as_obj(self.parse_json(data, where), f"a {where} chunk", self.backend)
            if "error" in chunk:
                raise self.unavailable(where, _error_text(chunk["error"]))
            model = model or _str(chunk.get("model"))
            if isinstance(chunk.get("usage"), dict):
                usage = chunk["usage"]
            choices = chunk.get("choices")
            if not isinstance(choices, list):
                raise self.bad_reply(where, "a streamed chunk has no 'choices' list")
            if not choices:
                continue  # the usage chunk
            choice = choices[0] if isinstance(choices[0], dict) else {}
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                raise self.bad_reply(where, "a streamed chunk has no choices[0].delta")
            piece = delta.get("content")
            if isinstance(piece, str):
                parts.append(piece)
            elif piece is not None:
                raise self.bad_reply(where, "a streamed delta.content is not a string")
            finish = _str(choice.get("finish_reason")) or finish
        raise self.bad_reply(where, "the stream ended without 'data: [DONE]'")


def _sse_data(resp: ResponseBody) -> Iterator[str]:
    """The ``data`` of each Server-Sent Event (multi-line data joined by newlines; comments, ``event:``,
    ``id:`` and ``retry:`` fields ignored), per the WHATWG event-stream format."""
    lines: list[str] = []
    for line in resp.lines():
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        if line.startswith("data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(" ") else value)
    if lines:
        yield "\n".join(lines)


def _error_text(err: Any) -> str:
    """The message of an OpenAI error object (or whatever the server put under ``error``)."""
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return str(err["message"])
    return str(err)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""
