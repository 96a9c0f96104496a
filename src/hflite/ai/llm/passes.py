"""The LLM roles inside a run: summaries before the brain, the advisor inside the engine, the
explanations after it, and what the report and ``hflite explain`` read back.

One code path for backtest and replay runtimes: ``engine.run`` builds the service and the advisor
and hands the advisor to the engine (mode changes the service's adapter, never this logic).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hflite import logs
from hflite.ai.llm.config import AdviseConfig
from hflite.ai.llm.roles import (
    DecisionFacts,
    advise_job,
    explain_job,
    facts_from_rows,
    render,
    summarise_job,
)
from hflite.ai.llm.schema import Advice, NewsSummary
from hflite.ai.llm.service import LLMService, Outcome
from hflite.domain.instrument import Instrument
from hflite.domain.signal import OrderIntent, RiskVerdict
from hflite.risk.gate import shrink

if TYPE_CHECKING:
    from hflite.ai.brain import BrainResult

__all__ = [
    "ADVICE_COLUMNS",
    "EXPLANATION_COLUMNS",
    "SUMMARY_COLUMNS",
    "LLMAdvisor",
    "LLMRunResult",
    "explain_decisions",
    "summarise_news",
]

_log = logs.get("hflite.llm")
Progress = Callable[[int, int], None]

_OUTCOME = [
    "source",
    "why",
    "model",
    "backend",
    "prompt_hash",
    "record_id",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "before_cutoff",
]
EXPLANATION_COLUMNS = [
    "intent_id",
    "ts",
    "symbol",
    "kind",
    "side",
    "status",
    "stance",
    "confidence",
    "reasons",
    "risks",
    "text",
    *_OUTCOME,
]
ADVICE_COLUMNS = [
    "intent_id",
    "ts",
    "symbol",
    "action",
    "scale_asked",
    "scale_applied",
    "qty_before",
    "qty_after",
    "confidence",
    "reasons",
    "risks",
    "text",
    *_OUTCOME,
]
SUMMARY_COLUMNS = ["symbol", "ts", "headlines", "score", "confidence", "reasons", "text", *_OUTCOME]
#: How many bars an LLM news summary stays an input of the investor view (like the 5-day news window).
SUMMARY_BARS = 5


@dataclass
class LLMRunResult:
    """A run's LLM work: the service's counters and one table per role."""

    stats: dict[str, Any]
    explanations: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EXPLANATION_COLUMNS))
    advice: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ADVICE_COLUMNS))
    summaries: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SUMMARY_COLUMNS))
    scope: str = "all"
    roles: dict[str, bool] = field(default_factory=dict)

    @property
    def fallbacks(self) -> int:
        return int(sum(self.stats.get("fallbacks", {}).values()))


def _outcome_fields(o: Outcome) -> dict[str, Any]:
    return {
        "source": o.source,
        "why": o.why,
        "model": o.model,
        "backend": o.backend,
        "prompt_hash": o.prompt_hash,
        "record_id": o.record_id,
        "latency_ms": round(o.latency_ms, 3),
        "prompt_tokens": o.prompt_tokens,
        "completion_tokens": o.completion_tokens,
        "before_cutoff": o.before_cutoff,
    }


# -- explain ------------------------------------------------------------------------------------
def in_scope(verdicts: pd.DataFrame, scope: str) -> pd.Series:
    """Which decisions the model explains under ``[llm] explain_scope``."""
    if verdicts.empty:
        return pd.Series([], dtype=bool)
    sent = pd.to_numeric(verdicts["qty_approved"], errors="coerce").fillna(0) > 0
    if scope == "orders":
        return sent
    if scope == "entries":
        return sent & (verdicts["kind"].astype(str) == "entry")
    return pd.Series(True, index=verdicts.index)


def explain_decisions(
    service: LLMService,
    verdicts: pd.DataFrame,
    ai_rows: pd.DataFrame | None,
    scope: str = "all",
    progress: Progress | None = None,
) -> pd.DataFrame:
    """One explanation per decision in scope, in the verdicts' order."""
    if verdicts.empty:
        return pd.DataFrame(columns=EXPLANATION_COLUMNS)
    by_id: dict[str, dict[str, Any]] = {}
    if ai_rows is not None and len(ai_rows) and "intent_id" in ai_rows:
        by_id = {str(r["intent_id"]): r for r in ai_rows.to_dict("records")}
    picked = verdicts[in_scope(verdicts, scope)]
    facts = [facts_from_rows(v, by_id.get(str(v["intent_id"]))) for v in picked.to_dict("records")]
    outcomes = service.ask_many([explain_job(f, service.cfg.grounded) for f in facts], progress)
    rows = []
    for f, o in zip(facts, outcomes, strict=True):
        value = o.value
        rows.append(
            {
                "intent_id": f.id,
                "ts": f.ts,
                "symbol": f.symbol,
                "kind": f.kind,
                "side": f.side,
                "status": f.status,
                "stance": getattr(value, "stance", ""),
                "confidence": getattr(value, "confidence", math.nan),
                "reasons": json.dumps(list(getattr(value, "reasons", []))),
                "risks": json.dumps(list(getattr(value, "risks", []))),
                "text": render(value),
                **_outcome_fields(o),
            }
        )
    return pd.DataFrame(rows, columns=EXPLANATION_COLUMNS)


# -- advise -------------------------------------------------------------------------------------
def brain_row(brain: BrainResult | None, symbol: str, ts: pd.Timestamp) -> dict[str, Any] | None:
    """The brain's decision row for ``symbol`` known at ``ts`` (the ai_decisions.csv shape)."""
    if brain is None or symbol not in brain.decisions:
        return None
    frame = brain.decisions[symbol]
    k = int(frame.index.searchsorted(ts, side="right")) - 1
    if k < 0:
        return None
    row: dict[str, Any] = frame.iloc[k].to_dict()
    for view, reasons in brain.reasons(symbol, ts).items():
        row[f"{view}_reasons"] = [list(r) for r in reasons]
    return row


class LLMAdvisor:
    """The portfolio-manager pass the engine runs on each entry risk approved: keep, shrink (not
    below ``min_scale``) or veto (when allowed), through ``risk.gate.shrink`` so it can never raise
    the size. Every outcome is kept in ``rows`` for the report and ``hflite explain``."""

    def __init__(self, service: LLMService, bounds: AdviseConfig, brain: BrainResult | None = None) -> None:
        self.service = service
        self.bounds = bounds
        self.brain = brain
        self.rows: list[dict[str, Any]] = []

    def scale_for(self, advice: Advice) -> float:
        """The scale applied for an answer, within the configured bounds."""
        lo = self.bounds.min_scale
        if advice.action == "veto":
            return 0.0 if self.bounds.allow_veto else lo
        if advice.action == "scale":
            return float(np.clip(advice.scale, lo, 1.0))
        return 1.0

    def __call__(
        self, intent: OrderIntent, verdict: RiskVerdict, values: dict[str, float], instrument: Instrument
    ) -> RiskVerdict:
        ts = pd.Timestamp(intent.ts, tz="UTC")
        facts = facts_from_rows(
            {
                "intent_id": intent.id,
                "ts": ts,
                "symbol": intent.symbol,
                "kind": intent.kind.value,
                "side": intent.side.value,
                "price": intent.price,
                "intent_reason": intent.reason,
                "status": verdict.status.value,
                "qty_requested": verdict.qty_requested,
                "qty_approved": verdict.qty_approved,
                "reason": verdict.reason,
                "rules": list(verdict.rules),
                "values": values,
            },
            brain_row(self.brain, intent.symbol, ts),
        )
        outcome = self.service.ask(advise_job(facts, self.service.cfg.grounded))
        advice = outcome.value
        assert isinstance(advice, Advice)
        scale = self.scale_for(advice) if not outcome.fell_back else 1.0
        rule = "pm_veto" if scale <= 0 else "pm_scale"
        why = f"LLM portfolio manager {advice.action} x{scale:.2f}: {'; '.join(advice.reasons)[:160]}"
        after = shrink(verdict, scale, rule, why, instrument)
        self.rows.append(self._row(facts, outcome, advice, scale, verdict, after))
        return after

    @staticmethod
    def _row(
        f: DecisionFacts, o: Outcome, advice: Advice, scale: float, before: RiskVerdict, after: RiskVerdict
    ) -> dict[str, Any]:
        return {
            "intent_id": f.id,
            "ts": f.ts,
            "symbol": f.symbol,
            "action": advice.action if not o.fell_back else "approve",
            "scale_asked": advice.scale,
            "scale_applied": scale,
            "qty_before": before.qty_approved,
            "qty_after": after.qty_approved,
            "confidence": advice.confidence,
            "reasons": json.dumps(list(advice.reasons)),
            "risks": json.dumps(list(advice.risks)),
            "text": render(advice),
            **_outcome_fields(o),
        }

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=ADVICE_COLUMNS)


# -- summarise ----------------------------------------------------------------------------------
def summarise_news(
    service: LLMService,
    news: pd.DataFrame,
    index: dict[str, pd.DatetimeIndex],
    scorer: Callable[[list[str]], np.ndarray] | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, pd.Series], pd.DataFrame]:
    """For each symbol and bar (``index``: each symbol's bar availability times) with new ticker
    headlines since the bar before, the model's (or the rule-based) summary. Returns per symbol the
    ``llm_news_score`` input of the investor view (the model's score, carried ``SUMMARY_BARS`` bars;
    NaN where only the fallback answered, which the rule-based news features already cover) and the
    table of every summary."""
    jobs, keys = [], []
    if not news.empty:
        news = news.assign(ts=pd.to_datetime(news["ts"], utc=True)).sort_values("ts", kind="stable")
        tags = news["tickers"].astype(str).str.split(",")
        for sym, bars in index.items():
            mine = news[tags.apply(lambda t, s=sym: s in [p.strip() for p in t])]
            if mine.empty or len(bars) == 0:
                continue
            if scorer is not None:
                mine = mine.assign(score=scorer(mine["headline"].astype(str).tolist()))
            # each headline belongs to the first bar known at or after it (point-in-time)
            slot = bars.searchsorted(pd.DatetimeIndex(mine["ts"]), side="left")
            for k in np.unique(slot[slot < len(bars)]):
                day = mine[slot == k]
                jobs.append(summarise_job(sym, bars[k], day))
                keys.append((sym, int(k), len(day)))
    outcomes = service.ask_many(jobs, progress)
    rows = []
    scores = {s: np.full(len(bars), np.nan) for s, bars in index.items()}
    for (sym, k, n), o in zip(keys, outcomes, strict=True):
        value = o.value
        assert isinstance(value, NewsSummary)
        if not o.fell_back:
            scores[sym][k : k + SUMMARY_BARS] = value.score
        rows.append(
            {
                "symbol": sym,
                "ts": index[sym][k],
                "headlines": n,
                "score": value.score,
                "confidence": value.confidence,
                "reasons": json.dumps(list(value.reasons)),
                "text": render(value),
                **_outcome_fields(o),
            }
        )
    series = {s: pd.Series(v, index=index[s], name="llm_news_score") for s, v in scores.items()}
    return series, pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
