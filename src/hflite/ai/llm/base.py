"""The one ``LLM`` protocol every backend speaks, and the plain data that crosses it.

A backend turns an ``LLMRequest`` (chat messages, an optional JSON schema the reply must match, token
and time limits) into an ``LLMReply`` (the raw text, token counts, latency) or raises an ``LLMError``
subclass naming what went wrong. Backends never validate the reply against the schema and never retry:
``hflite.ai.llm.service`` does both, once, for every backend.

Backends: ``ollama`` (Ollama's HTTP API), ``openai`` (any OpenAI-compatible ``/v1/chat/completions``
server: llama.cpp server, vLLM, LM Studio, hosted endpoints) and ``gguf`` (a GGUF file run in-process
by xllamacpp or llama-cpp-python).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "LLM",
    "LLMBadReply",
    "LLMError",
    "LLMReply",
    "LLMRequest",
    "LLMTimeout",
    "LLMUnavailable",
    "Message",
    "ModelInfo",
]


@dataclass(frozen=True, slots=True)
class Message:
    role: str  # system | user | assistant
    content: str


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One chat call. ``schema`` (a JSON schema) asks for a JSON reply matching it: backends that can
    constrain decoding to it do (Ollama ``format``, OpenAI ``response_format``, a GGUF grammar)."""

    messages: tuple[Message, ...]
    schema: dict[str, Any] | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0
    timeout_s: float = 30.0
    stream: bool = False


@dataclass(frozen=True, slots=True)
class LLMReply:
    """What a backend answered. ``latency_s`` is wall time of the whole call, first byte to last."""

    text: str
    model: str  # the model id the backend reports (or the configured one)
    backend: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str = ""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.latency_s if self.latency_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model a backend offers (``hflite llm check``)."""

    id: str
    size_bytes: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


class LLMError(RuntimeError):
    """A call failed; the message says which backend, where and why (never a key or a secret)."""

    retryable: bool = True


class LLMUnavailable(LLMError):
    """The backend cannot be reached or refused the call (connection refused, HTTP 4xx/5xx, no model)."""


class LLMTimeout(LLMError):
    """No complete reply within the call's timeout."""


class LLMBadReply(LLMError):
    """The backend answered, but not in its documented format (malformed JSON, missing fields)."""


@runtime_checkable
class LLM(Protocol):
    """A chat model behind one backend."""

    backend: str  # ollama | openai | gguf
    model: str  # the configured model id

    def chat(self, request: LLMRequest) -> LLMReply:
        """One call; raises an ``LLMError`` subclass on failure."""
        ...

    def models(self, timeout_s: float = 5.0) -> list[ModelInfo]:
        """What the backend offers (raises ``LLMUnavailable`` when it is down)."""
        ...

    def close(self) -> None: ...
