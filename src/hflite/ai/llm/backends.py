"""``make_backend``: the one place a backend name from ``[llm] backend`` / ``fallbacks`` becomes an ``LLM``.

Construction is cheap and offline for every backend: HTTP backends connect on their first call, the
``gguf`` backend resolves and loads its model on its first call.
"""

from __future__ import annotations

from hflite.ai.llm.base import LLM
from hflite.ai.llm.config import LLMConfig

__all__ = ["BACKENDS", "make_backend"]

BACKENDS: tuple[str, ...] = ("gguf", "ollama", "openai")


def make_backend(name: str, cfg: LLMConfig) -> LLM:
    """The backend ``name`` (``gguf`` | ``ollama`` | ``openai``) configured from ``cfg``'s sub-table."""
    if name == "ollama":
        from hflite.ai.llm.ollama import OllamaLLM

        return OllamaLLM(cfg.ollama)
    if name == "openai":
        from hflite.ai.llm.openai_compat import OpenAICompatLLM

        return OpenAICompatLLM(cfg.openai)
    if name == "gguf":
        from hflite.ai.llm.gguf import GGUFLLM

        return GGUFLLM(cfg.gguf)
    raise ValueError(f"unknown LLM backend {name!r}; expected one of {', '.join(BACKENDS)}")
