"""The one door to the LLMs: replay or call, validate, retry, fall back, record, and count.

``LLMService.ask`` takes a role's prompt and the as-of time of the data in it and always returns an
``Outcome``: the validated reply (live or replayed) or the role's rule-based fallback with the reason
it was used. Nothing here raises because a model is down, slow, or wrong.

- ``off``: no model, every answer is the fallback ("LLM off").
- ``replay``: recorded replies only (journal, then tapes), looked up by (role, model, prompt hash);
  a missing record uses the fallback and is counted. Backtests default to it.
- ``live``: call the backend (then each of ``[llm] fallbacks``), validate against the role's schema,
  retry within ``retries`` and the run's call and token budgets, record every attempt in the journal.
  A backend that refuses two calls in a row is skipped for the rest of the run.

Each model may have a training cutoff (``LLMConfig.cutoff``): replies about dates before it may carry
knowledge of what came next, so every such outcome is flagged and counted.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel

from hflite import logs
from hflite.ai.llm.base import LLM, LLMBadReply, LLMError, LLMRequest, LLMTimeout, LLMUnavailable, Message
from hflite.ai.llm.config import LLMConfig, Mode
from hflite.ai.llm.journal import CallRecord, LLMJournal, ReplyIndex, prompt_hash, read_tape
from hflite.ai.llm.schema import ReplyError, json_schema, parse_reply

__all__ = ["Job", "LLMService", "LLMStats", "Outcome", "model_id"]

_log = logs.get("hflite.llm")
_DOWN_AFTER = 2  # consecutive refusals before a backend is skipped for the run
PACKAGED_MODEL = "gemma-3-270m-q4_k_m"


def model_id(cfg: LLMConfig, backend: str | None = None) -> str:
    """The model id a backend is configured with (no model is loaded or reached)."""
    name = backend or cfg.backend
    if name == "ollama":
        return cfg.ollama.model
    if name == "openai":
        return cfg.openai.model
    return Path(cfg.gguf.path).stem if cfg.gguf.path else PACKAGED_MODEL


@dataclass(frozen=True)
class Job:
    """One question for a role: the prompt, its schema, its as-of time and its fallback."""

    role: str
    subject: str
    as_of: pd.Timestamp
    messages: tuple[Message, ...]
    schema: type[BaseModel]
    fallback: Callable[[], BaseModel]
    #: A reply schema of the job's own (e.g. reasons chosen by number from a list), sent to the
    #: backend and hashed, and ``decode``, which turns such a reply (parsed JSON) into ``schema``'s
    #: model or raises ValueError.
    schema_json: dict[str, Any] | None = None
    decode: Callable[[Any], BaseModel] | None = None

    def json_schema(self) -> dict[str, Any]:
        return self.schema_json if self.schema_json is not None else json_schema(self.schema)

    def parse(self, text: str) -> BaseModel:
        """The reply validated against the role's schema (``ReplyError`` says why not)."""
        if self.decode is None:
            return parse_reply(self.schema, text)
        try:
            payload = json.loads(text.strip())
        except json.JSONDecodeError as exc:
            raise ReplyError(f"not JSON ({exc.msg} at char {exc.pos}): {text[:120]!r}") from None
        try:
            return self.decode(payload)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise ReplyError(f"does not match the {self.role} reply schema: {str(exc)[:300]}") from None


@dataclass(frozen=True)
class Outcome:
    """The answer to one job and where it came from."""

    role: str
    subject: str
    as_of: pd.Timestamp
    value: BaseModel
    source: str  # live | replay | fallback
    why: str  # why the fallback was used ("" otherwise)
    model: str
    backend: str
    prompt_hash: str
    record_id: int | None = None
    reply: str = ""
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    before_cutoff: bool = False

    @property
    def fell_back(self) -> bool:
        return self.source == "fallback"


@dataclass
class LLMStats:
    """What a run's LLM work cost and how often it fell back (the report's LLM section)."""

    mode: str
    backend: str
    model: str
    fallbacks_chain: tuple[str, ...] = ()
    max_calls: int = 0
    max_tokens: int = 0
    timeout_s: float = 0.0
    retries: int = 0
    concurrency: int = 1
    cutoff: date | None = None
    calls: int = 0  # model calls made (every attempt)
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)  # role:source
    fallbacks: Counter[str] = field(default_factory=Counter)  # reason
    before_cutoff: int = 0
    down: list[str] = field(default_factory=list)
    replay_sources: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def count(self, source: str, role: str | None = None) -> int:
        return sum(
            n
            for k, n in self.outcomes.items()
            if k.endswith(f":{source}") and (role is None or k.startswith(f"{role}:"))
        )

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.latency_ms)
        return {
            "mode": self.mode,
            "backend": self.backend,
            "model": self.model,
            "fallback_backends": list(self.fallbacks_chain),
            "budget": {
                "max_calls": self.max_calls,
                "max_tokens": self.max_tokens,
                "timeout_s": self.timeout_s,
                "retries": self.retries,
                "concurrency": self.concurrency,
            },
            "calls": self.calls,
            "failed_calls": self.failed_calls,
            "tokens": self.tokens,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_ms_median": lat[len(lat) // 2] if lat else None,
            "latency_ms_max": lat[-1] if lat else None,
            "outcomes": dict(sorted(self.outcomes.items())),
            "fallbacks": dict(self.fallbacks.most_common()),
            "training_cutoff": self.cutoff.isoformat() if self.cutoff else None,
            "before_cutoff": self.before_cutoff,
            "backends_down": list(self.down),
            "replay_sources": dict(self.replay_sources),
            "warnings": list(self.warnings),
        }


class LLMService:
    """Replay or call, validate, retry, fall back, record and count (thread-safe)."""

    def __init__(
        self,
        cfg: LLMConfig,
        mode: Mode | None = None,
        *,
        run_id: str = "",
        base_dir: Path | None = None,
        backends: dict[str, LLM] | None = None,
        journal: LLMJournal | None = None,
    ) -> None:
        self.cfg = cfg
        self.mode: Mode = mode or cfg.mode
        self.run_id = run_id
        self.base = base_dir or Path.cwd()
        self.model = model_id(cfg)
        self.chain = (cfg.backend, *cfg.fallbacks)
        self._backends: dict[str, LLM] = dict(backends or {})
        self._failures: Counter[str] = Counter()
        self._down: set[str] = set()
        self._lock = threading.Lock()
        #: (kind, fields) on every call ("llm.call") and fallback ("llm.fallback"): the runtime's
        #: metrics and alerts (``ops.watch.OpsKit.wire``); must return at once and never raise
        self.observer: Callable[[str, dict[str, Any]], None] | None = None
        self.stats = LLMStats(
            mode=self.mode,
            backend=cfg.backend,
            model=self.model,
            fallbacks_chain=tuple(cfg.fallbacks),
            max_calls=cfg.max_calls,
            max_tokens=cfg.max_tokens,
            timeout_s=cfg.timeout_s,
            retries=cfg.retries,
            concurrency=cfg.concurrency,
            cutoff=cfg.cutoff(self.model),
        )
        self.journal = journal  # written in live mode only; replay reads it when it exists
        if self.journal is None and self.mode == "live":
            self.journal = LLMJournal(self._path(cfg.journal))
        self.index = ReplyIndex()
        if self.mode == "replay":
            self._load_index()

    def _path(self, p: Path) -> Path:
        return p if p.is_absolute() else self.base / p

    def _load_index(self) -> None:
        for tape in self.cfg.tapes:
            path = self._path(tape)
            if not path.is_file():
                self.stats.warnings.append(f"llm.tapes: {tape} not found; its replies are not replayed")
                continue
            self.index.add(read_tape(path), f"tape {tape}")
        journal = self.journal
        path = self._path(self.cfg.journal)
        if journal is None and path.is_file():
            journal = LLMJournal(path)
        if journal is not None:  # the journal's own records win over a tape's
            self.index.add(journal.records(model=self.model, valid_only=True), f"journal {self.cfg.journal}")
            if journal is not self.journal:
                journal.close()
        self.stats.replay_sources = dict(self.index.sources)

    # -- backends ---------------------------------------------------------------------------------
    def backend(self, name: str) -> LLM:
        with self._lock:
            if name not in self._backends:
                from hflite.ai.llm.backends import make_backend

                self._backends[name] = make_backend(name, self.cfg)
            return self._backends[name]

    def close(self) -> None:
        for b in self._backends.values():
            try:
                b.close()
            except Exception:  # noqa: BLE001 - closing must not hide the run's outcome
                _log.warning("llm.close_failed", backend=b.backend)
        if self.journal is not None:
            self.journal.close()

    # -- asking -----------------------------------------------------------------------------------
    def ask(self, job: Job) -> Outcome:
        """The validated answer to ``job`` (live or replayed) or its fallback; never raises for a
        model's failure."""
        schema = job.json_schema()
        digest = prompt_hash(job.role, job.messages, schema)
        if self.mode == "off":
            return self._fallback(job, digest, "LLM off")
        if self.mode == "replay":
            return self._replay(job, digest)
        return self._live(job, digest, schema)

    def ask_many(
        self, jobs: Sequence[Job], progress: Callable[[int, int], None] | None = None
    ) -> list[Outcome]:
        """``ask`` for every job, ``concurrency`` at a time (in-process models run one at a time);
        outcomes in the jobs' order."""
        total = len(jobs)
        if total == 0:
            return []
        workers = 1 if self.mode != "live" or self.cfg.backend == "gguf" else self.cfg.concurrency
        out: list[Outcome | None] = [None] * total
        done = 0
        if workers == 1:
            for k, job in enumerate(jobs):
                out[k] = self.ask(job)
                done += 1
                if progress:
                    progress(done, total)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm") as pool:
                futures = {pool.submit(self.ask, job): k for k, job in enumerate(jobs)}
                for fut in as_completed(futures):
                    out[futures[fut]] = fut.result()
                    done += 1
                    if progress:
                        progress(done, total)
        return [o for o in out if o is not None]

    def _replay(self, job: Job, digest: str) -> Outcome:
        rec = self.index.get(job.role, self.model, digest)
        if rec is None:
            return self._fallback(job, digest, "no recorded reply")
        try:
            value = job.parse(rec.reply)
        except ReplyError as exc:
            return self._fallback(job, digest, f"recorded reply no longer valid: {exc}")
        return self._done(
            job,
            self._outcome(
                job, value, "replay", digest, rec.backend, rec.id, rec.reply, rec.latency_ms,
                rec.prompt_tokens, rec.completion_tokens, 0,
            ),
        )  # fmt: skip

    def _live(self, job: Job, digest: str, schema: dict[str, Any]) -> Outcome:
        cfg = self.cfg
        why = "no backend configured"
        attempts = 0
        for name in self.chain:
            if name in self._down:
                why = f"{name} down"
                continue
            messages = job.messages
            for attempt in range(1, cfg.retries + 2):
                over = self._reserve()
                if over:
                    return self._fallback(job, digest, over, attempts)
                attempts += 1
                request = LLMRequest(
                    messages,
                    schema,
                    max_tokens=cfg.max_reply_tokens,
                    temperature=cfg.temperature,
                    seed=cfg.seed,
                    timeout_s=cfg.timeout_s,
                )
                try:
                    llm = self.backend(name)
                    reply = llm.chat(request)
                except LLMUnavailable as exc:
                    why = f"{name} unavailable: {exc}"
                    self._failed(job, digest, name, attempt, messages, str(exc), down=True)
                    break  # next backend
                except (LLMTimeout, LLMBadReply, LLMError) as exc:
                    kind = "timeout" if isinstance(exc, LLMTimeout) else "bad reply"
                    why = f"{name} {kind}: {exc}"
                    self._failed(job, digest, name, attempt, messages, str(exc), down=False)
                    continue
                self._charge(reply.prompt_tokens, reply.completion_tokens, reply.latency_s)
                if self.observer is not None:
                    self.observer("llm.call", {"backend": name, "latency_s": reply.latency_s, "ok": True})
                with self._lock:
                    self._failures[name] = 0
                try:
                    value: BaseModel | None = job.parse(reply.text)
                    error = ""
                except ReplyError as exc:
                    value, error = None, str(exc)
                rid = self._record(job, digest, reply.backend, attempt, messages, reply, error)
                if value is not None:
                    return self._done(
                        job,
                        self._outcome(
                            job, value, "live", digest, reply.backend, rid, reply.text,
                            reply.latency_s * 1000.0, reply.prompt_tokens, reply.completion_tokens, attempts,
                        ),
                    )  # fmt: skip
                why = f"{name} invalid reply: {error}"
                messages = (
                    *job.messages,
                    Message("assistant", reply.text[:2000]),
                    Message("user", f"That reply was invalid ({error}). Answer again with JSON only."),
                )
        return self._fallback(job, digest, why, attempts)

    # -- bookkeeping ------------------------------------------------------------------------------
    def _reserve(self) -> str:
        """Take one call from the budget, or say which budget is spent."""
        with self._lock:
            if self.stats.calls >= self.cfg.max_calls:
                return f"budget: {self.cfg.max_calls} calls spent"
            if self.stats.tokens >= self.cfg.max_tokens:
                return f"budget: {self.cfg.max_tokens} tokens spent"
            self.stats.calls += 1
            return ""

    def _charge(self, prompt_tokens: int, completion_tokens: int, latency_s: float) -> None:
        with self._lock:
            self.stats.prompt_tokens += prompt_tokens
            self.stats.completion_tokens += completion_tokens
            self.stats.latency_ms.append(latency_s * 1000.0)

    def _failed(
        self,
        job: Job,
        digest: str,
        name: str,
        attempt: int,
        messages: tuple[Message, ...],
        error: str,
        *,
        down: bool,
    ) -> None:
        if self.observer is not None:
            self.observer("llm.call", {"backend": name, "latency_s": None, "ok": False})
        with self._lock:
            self.stats.failed_calls += 1
            if down:
                self._failures[name] += 1
                if self._failures[name] >= _DOWN_AFTER and name not in self._down:
                    self._down.add(name)
                    self.stats.down.append(name)
                    _log.warning("llm.backend_down", backend=name, detail=error[:300])
        self._record(job, digest, name, attempt, messages, None, error)

    def _record(
        self,
        job: Job,
        digest: str,
        backend: str,
        attempt: int,
        messages: tuple[Message, ...],
        reply: Any,
        error: str,
    ) -> int | None:
        if self.journal is None:
            return None
        rec = CallRecord(
            role=job.role,
            backend=backend,
            model=self.model,
            prompt_hash=digest,
            as_of=_iso(job.as_of),
            reply=reply.text if reply is not None else "",
            valid=reply is not None and not error,
            subject=job.subject,
            run_id=self.run_id,
            attempt=attempt,
            prompt=json.dumps([[m.role, m.content] for m in messages], ensure_ascii=False),
            error=error[:1000],
            latency_ms=reply.latency_s * 1000.0 if reply is not None else 0.0,
            prompt_tokens=reply.prompt_tokens if reply is not None else 0,
            completion_tokens=reply.completion_tokens if reply is not None else 0,
        )
        return self.journal.record(rec)

    def _outcome(
        self,
        job: Job,
        value: BaseModel,
        source: str,
        digest: str,
        backend: str,
        record_id: int | None,
        reply: str,
        latency_ms: float,
        prompt_tokens: int,
        completion_tokens: int,
        attempts: int,
    ) -> Outcome:
        """A model's answer (live or replayed) to ``job``, flagged when it concerns a date before the
        model's training cutoff."""
        return Outcome(
            job.role,
            job.subject,
            job.as_of,
            value,
            source,
            "",
            self.model,
            backend,
            digest,
            record_id,
            reply,
            latency_ms,
            prompt_tokens,
            completion_tokens,
            attempts,
            self._before_cutoff(job.as_of),
        )

    def _fallback(self, job: Job, digest: str, why: str, attempts: int = 0) -> Outcome:
        outcome = Outcome(
            job.role,
            job.subject,
            job.as_of,
            job.fallback(),
            "fallback",
            why,
            self.model,
            "rule",
            digest,
            attempts=attempts,
        )
        with self._lock:
            self.stats.fallbacks[_reason_kind(why)] += 1
        if self.observer is not None and self.mode != "off":
            self.observer(
                "llm.fallback", {"backend": self.cfg.backend, "why": _reason_kind(why), "detail": why}
            )
        return self._done(job, outcome)

    def _done(self, job: Job, outcome: Outcome) -> Outcome:
        with self._lock:
            self.stats.outcomes[f"{job.role}:{outcome.source}"] += 1
            if outcome.before_cutoff:
                self.stats.before_cutoff += 1
        return outcome

    def _before_cutoff(self, as_of: pd.Timestamp) -> bool:
        cut = self.stats.cutoff
        return cut is not None and pd.Timestamp(as_of).date() < cut


def _reason_kind(why: str) -> str:
    """A fallback reason without its details (the report counts by it)."""
    head = why.split(":", 1)[0]
    return head if len(head) < 60 else head[:60]


def _iso(ts: Any) -> str:
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
    return t.isoformat()
