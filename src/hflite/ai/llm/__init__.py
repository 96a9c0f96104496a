"""LLMs that explain and, within bounds, advise: one ``LLM`` protocol over Ollama, OpenAI-compatible
servers and an in-process GGUF model, with every call recorded and replayable (``service``)."""

from hflite.ai.llm.base import (
    LLM,
    LLMBadReply,
    LLMError,
    LLMReply,
    LLMRequest,
    LLMTimeout,
    LLMUnavailable,
    Message,
)
from hflite.ai.llm.config import LLMConfig

__all__ = [
    "LLM",
    "LLMBadReply",
    "LLMConfig",
    "LLMError",
    "LLMReply",
    "LLMRequest",
    "LLMTimeout",
    "LLMUnavailable",
    "Message",
]
