"""The ``ollama`` backend: Ollama's native HTTP API over httpx.

Payloads follow Ollama's API reference (https://github.com/ollama/ollama/blob/main/docs/api.md, now
https://docs.ollama.com/api) and its error page (https://docs.ollama.com/api/errors):

- ``POST /api/chat`` ``{"model", "messages": [{"role", "content"}], "stream", "format", "options",
  "keep_alive"}``; ``format`` is the JSON schema ("structured outputs") when the request has one;
  ``options`` carries ``temperature``, ``seed`` and ``num_predict`` (the reply-token cap). The reply is
  ``{"model", "created_at", "message": {"role", "content"}, "done": true, "done_reason",
  "prompt_eval_count", "eval_count", ...}``; streamed, it is NDJSON: one such object per line with a
  piece of ``message.content`` and ``"done": false``, the last with ``"done": true`` and the counts.
- ``POST /api/generate`` ``{"model", "prompt", "system", "stream", "format", "options", "keep_alive"}``
  answers the same way with the text in ``response``.
- ``GET /api/tags`` -> ``{"models": [{"name", "model", "modified_at", "size", "digest", "details"}]}``.
- Errors: HTTP 4xx/5xx with ``{"error": "..."}``; an error after streaming began arrives as an NDJSON
  line ``{"error": "..."}`` under status 200.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from hflite.ai.llm._http import HTTPBackend, ResponseBody, as_int, as_obj
from hflite.ai.llm.base import LLMReply, LLMRequest, Message, ModelInfo
from hflite.ai.llm.config import OllamaConfig

__all__ = ["OllamaLLM"]

_TextOf = Callable[[dict[str, Any], bool], str]


def _chat_text(obj: dict[str, Any], partial: bool) -> str:
    """The text of one ``/api/chat`` reply object (``message.content``); a stream's last chunk may omit it."""
    message = obj.get("message")
    if message is None and partial:
        return ""
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        raise ValueError("no message.content")
    content: str = message["content"]
    return content


def _generate_text(obj: dict[str, Any], partial: bool) -> str:
    """The text of one ``/api/generate`` reply object (``response``)."""
    text = obj.get("response")
    if text is None and partial:
        return ""
    if not isinstance(text, str):
        raise ValueError("no response")
    return text


def flatten(messages: tuple[Message, ...]) -> tuple[str, str]:
    """``(system, prompt)`` for ``/api/generate``: system messages joined into ``system``; the rest as
    the prompt: a lone user message verbatim, a longer exchange as ``Role: content`` paragraphs."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    turns = [m for m in messages if m.role != "system"]
    if len(turns) == 1 and turns[0].role == "user":
        return system, turns[0].content
    if not turns:
        return system, ""
    prompt = "\n\n".join(f"{m.role.capitalize()}: {m.content}" for m in turns)
    return system, prompt + "\n\nAssistant:"


class OllamaLLM(HTTPBackend):
    """A model served by Ollama (``[llm.ollama] url, model, keep_alive``)."""

    backend = "ollama"

    def __init__(self, cfg: OllamaConfig, *, client: httpx.Client | None = None) -> None:
        super().__init__(cfg.url, cfg.model, client=client)
        self.keep_alive = cfg.keep_alive

    # -- calls -----------------------------------------------------------------------------------
    def chat(self, request: LLMRequest) -> LLMReply:
        """One ``POST /api/chat`` call (streamed when ``request.stream``)."""
        body = self._body(request)
        body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        return self._call("/api/chat", body, request, _chat_text)

    def generate(self, request: LLMRequest) -> LLMReply:
        """One ``POST /api/generate`` call: the messages flattened into ``system`` and ``prompt``."""
        system, prompt = flatten(request.messages)
        body = self._body(request)
        body["prompt"] = prompt
        if system:
            body["system"] = system
        return self._call("/api/generate", body, request, _generate_text)

    def models(self, timeout_s: float = 5.0) -> list[ModelInfo]:
        """The locally available models (``GET /api/tags``)."""
        where = "GET /api/tags"
        with self.open("GET", "/api/tags", None, timeout_s) as resp:
            data = as_obj(resp.json(), "the /api/tags reply", self.backend)
        models = data.get("models")
        if not isinstance(models, list):
            raise self.bad_reply(where, "no 'models' list")
        out: list[ModelInfo] = []
        for entry in models:
            if not isinstance(entry, dict):
                raise self.bad_reply(where, "a 'models' entry is not an object")
            name = entry.get("name") or entry.get("model")
            if not isinstance(name, str) or not name:
                raise self.bad_reply(where, "a model has no name")
            details = dict(entry["details"]) if isinstance(entry.get("details"), dict) else {}
            for key in ("digest", "modified_at"):
                if key in entry:
                    details[key] = entry[key]
            size = entry.get("size")
            out.append(ModelInfo(name, size if isinstance(size, int) else None, details))
        return out

    # -- internals -------------------------------------------------------------------------------
    def _body(self, request: LLMRequest) -> dict[str, Any]:
        """The fields ``/api/chat`` and ``/api/generate`` share."""
        body: dict[str, Any] = {
            "model": self.model,
            "stream": request.stream,
            "options": {
                "temperature": request.temperature,
                "seed": request.seed,
                "num_predict": request.max_tokens,
            },
            "keep_alive": self.keep_alive,
        }
        if request.schema is not None:
            body["format"] = request.schema
        return body

    def _call(self, path: str, body: dict[str, Any], request: LLMRequest, text_of: _TextOf) -> LLMReply:
        where = f"POST {path}"
        start = time.perf_counter()
        with self.open("POST", path, body, request.timeout_s) as resp:
            if request.stream:
                text, last = self._read_stream(resp, where, text_of)
            else:
                last = self._check(resp.json(), where)
                try:
                    text = text_of(last, False)
                except ValueError as exc:
                    raise self.bad_reply(where, f"{exc} in the reply") from None
        latency = time.perf_counter() - start
        model = last.get("model")
        return LLMReply(
            text=text,
            model=model if isinstance(model, str) and model else self.model,
            backend=self.backend,
            prompt_tokens=as_int(last.get("prompt_eval_count")),
            completion_tokens=as_int(last.get("eval_count")),
            latency_s=latency,
            finish_reason=str(last.get("done_reason") or ("stop" if last.get("done") else "")),
        )

    def _check(self, data: Any, where: str) -> dict[str, Any]:
        """``data`` as a reply object; an ``{"error": ...}`` object is the server refusing the call."""
        obj = as_obj(data, f"the {where} reply", self.backend)
        if "error" in obj:
            raise self.unavailable(where, str(obj["error"]))
        return obj

    def _read_stream(self, resp: ResponseBody, where: str, text_of: _TextOf) -> tuple[str, dict[str, Any]]:
        """Join the NDJSON chunks' text; return it with the final (``"done": true``) chunk."""
        parts: list[str] = []
        for line in resp.lines():
            if not line.strip():
                continue
            obj = self._check(self.parse_json(line, where), where)
            try:
                parts.append(text_of(obj, True))
            except ValueError as exc:
                raise self.bad_reply(where, f"{exc} in a streamed chunk") from None
            if obj.get("done") is True:
                return "".join(parts), obj
        raise self.bad_reply(where, "the stream ended without a 'done' chunk")
