"""``[llm]``: which model answers, how it is reached, what it may do, and what it may spend.

Keys and secrets come from the environment (``HFLITE_LLM__OPENAI__API_KEY`` or ``.env``) and are held
as ``SecretStr``: they never reach a log line, a report or an exception.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

Backend = Literal["gguf", "ollama", "openai"]
Mode = Literal["off", "replay", "live"]

_FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

#: Training-data cutoffs of models we know (the model card's "knowledge cutoff"); ``[llm] cutoffs``
#: adds or overrides. Keys match a model id by prefix, case-insensitively, after any path/owner part.
KNOWN_CUTOFFS: dict[str, date] = {
    "gemma-3": date(2024, 8, 1),
    "gemma3": date(2024, 8, 1),
    "llama3.2": date(2023, 12, 1),
    "llama-3.2": date(2023, 12, 1),
    "llama3.1": date(2023, 12, 1),
    "qwen2.5": date(2024, 9, 1),
    "gpt-4o-mini": date(2023, 10, 1),
    "gpt-4o": date(2023, 10, 1),
}


class OllamaConfig(BaseModel):
    model_config = _FROZEN
    url: str = Field("http://127.0.0.1:11434", description="Ollama's base URL")
    model: str = Field("gemma3:270m", description="an Ollama model tag (`ollama list`)")
    keep_alive: str = "5m"


class OpenAIConfig(BaseModel):
    model_config = _FROZEN
    url: str = Field("http://127.0.0.1:8080/v1", description="base URL up to and including /v1")
    model: str = Field("gemma-3-270m", description="the model id the server expects")
    api_key: SecretStr | None = Field(None, description="sent as a Bearer token; set it in .env")
    json_schema: bool = Field(True, description="send response_format json_schema (else json_object)")


class GGUFConfig(BaseModel):
    model_config = _FROZEN
    path: str = Field(
        "", description="a .gguf file; empty: the packaged Gemma 3 270M (pip extra `llm`), if installed"
    )
    runner: Literal["auto", "xllamacpp", "llama-cpp-python"] = "auto"
    n_ctx: int = Field(2048, ge=256, le=131072)
    threads: int = Field(
        0, ge=0, le=256, description="CPU threads; 0: one less than the machine's cores (at least 1)"
    )

    def n_threads(self) -> int:
        """The threads to run with (0 resolves to the cores minus one, at least one)."""
        return self.threads or max(1, (os.cpu_count() or 2) - 1)


class AdviseConfig(BaseModel):
    """Bounds of the portfolio-manager pass: it may only shrink or veto what risk approved."""

    model_config = _FROZEN
    min_scale: float = Field(0.5, ge=0.0, le=1.0, description="the smallest size it may scale to")
    allow_veto: bool = True


class LLMConfig(BaseModel):
    """``[llm]``: backends, roles, record/replay and budgets."""

    model_config = _FROZEN
    mode: Mode = Field(
        "replay",
        description="off: no LLM, rule-based text; replay: recorded replies only (backtest default); "
        "live: call the model and record every reply",
    )
    backend: Backend = "gguf"
    fallbacks: tuple[Backend, ...] = Field((), description="backends tried, in order, when one is down")
    explain: bool = Field(True, description="explain every decision in plain language")
    grounded: bool = Field(
        True,
        description="explain and advise choose their reasons and risks among the decision's own facts "
        "(constrained decoding: nothing invented; right for small models); false: free text",
    )
    explain_scope: Literal["all", "orders", "entries"] = Field(
        "all",
        description="which decisions the model explains: all, those that sent an order, or entries "
        "that sent one (the others get the rule-based explanation)",
    )
    advise: bool = Field(False, description="a portfolio-manager pass that may veto or shrink entries")
    summarise: bool = Field(False, description="summarise each day's headlines per ticker into a score")
    advise_bounds: AdviseConfig = Field(default_factory=AdviseConfig)
    journal: Path = Field(Path("var/llm/journal.sqlite"), description="where every call is recorded")
    tapes: tuple[Path, ...] = Field((), description="recorded replies (JSONL) replay also reads")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="per call")
    retries: int = Field(1, ge=0, le=10, description="extra tries after a failed or invalid reply")
    max_calls: int = Field(2000, ge=0, description="model calls per run (replayed replies are free)")
    max_tokens: int = Field(1_000_000, ge=0, description="prompt + reply tokens per run")
    max_reply_tokens: int = Field(192, ge=16, le=8192)
    concurrency: int = Field(1, ge=1, le=64, description="calls in flight at once")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    seed: int = 0
    cutoffs: dict[str, date] = Field(
        default_factory=dict, description="model id -> training-data cutoff (adds to the known ones)"
    )
    ollama: OllamaConfig = Field(default_factory=OllamaConfig)
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)
    gguf: GGUFConfig = Field(default_factory=GGUFConfig)

    @model_validator(mode="after")
    def _distinct(self) -> LLMConfig:
        if self.backend in self.fallbacks:
            raise ValueError(f"fallbacks: {self.backend!r} is already the backend")
        return self

    def cutoff(self, model_id: str) -> date | None:
        """The training cutoff of ``model_id`` (configured first, then known), or None."""
        name = model_id.rsplit("/", 1)[-1].lower()
        for table in (self.cutoffs, KNOWN_CUTOFFS):
            for key, when in sorted(table.items(), key=lambda kv: -len(kv[0])):
                if name.startswith(key.lower()) or model_id.lower() == key.lower():
                    return when
        return None
