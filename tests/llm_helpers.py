"""A real trend run with a hand-made LLM result attached: the shared setup of test_report_llm.py and
test_explain_llm.py (no mocks: the run is a real backtest, the LLM rows are data in the passes' shape)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from datetime import date
from pathlib import Path

import pandas as pd

from hflite.ai.llm.journal import prompt_hash
from hflite.ai.llm.passes import ADVICE_COLUMNS, EXPLANATION_COLUMNS, SUMMARY_COLUMNS, LLMRunResult
from hflite.ai.llm.roles import explain_job, facts_from_rows
from hflite.ai.llm.schema import Explanation, json_schema
from hflite.ai.llm.service import LLMStats
from hflite.data.store import Store
from hflite.engine.result import RunResult
from hflite.engine.run import backtest
from tests.conftest import make_settings

MODEL = "llama3.1:8b"
CUTOFF = date(2023, 12, 31)
SCRIPT = "<script>alert('llm')</script>"
MARKUP = "[/] [bold]not markup[/bold]"


def trend_run(store: Store, run_id: str) -> RunResult:
    """A 2017-2018 trend run on SPY, QQQ and GLD (entries, stop-outs and exits)."""
    settings = make_settings(
        store,
        run={"symbols": ["SPY", "QQQ", "GLD"], "start": "2017-01-03", "end": "2018-12-31"},
        strategy={"name": "trend", "fast": 10, "slow": 40},
    )
    return backtest(settings, store, run_id=run_id)


def first_trade_decisions(result: RunResult) -> tuple[str, str]:
    """The entry and exit decision ids of the run's first closed trade, found the plain way: the fills
    at the trade's entry and exit times on its symbol, and the orders that made them."""
    trades = result.trades[~result.trades["is_open"].astype(bool)]
    trade = trades.iloc[0]
    fills, orders = result.fills, result.orders.set_index("order_id")
    at = fills[(fills["symbol"] == trade["symbol"])]
    entry_order = at.loc[(at["ts"] == trade["entry_ts"]) & (at["side"] == "buy"), "order_id"].iloc[0]
    exit_order = at.loc[(at["ts"] == trade["exit_ts"]) & (at["side"] == "sell"), "order_id"].iloc[0]
    return str(orders.loc[entry_order, "decision_id"]), str(orders.loc[exit_order, "decision_id"])


def _hash(verdict: dict) -> str:
    job = explain_job(facts_from_rows(verdict))
    return prompt_hash("explain", job.messages, json_schema(Explanation))


def make_llm(result: RunResult) -> LLMRunResult:
    """Explanations of the first trade's entry (live, about a date before the model's cutoff, with a
    script tag and rich markup in its text), the next entry (replayed) and the one after (a fallback);
    the portfolio manager scaled the first and vetoed the second; two news summaries."""
    v = result.verdicts
    entries = v[(v["kind"] == "entry") & (v["qty_approved"] > 0)]
    first, _ = first_trade_decisions(result)
    rows = [entries[entries["intent_id"] == first].iloc[0].to_dict()]
    rows += [r for r in entries.to_dict("records") if r["intent_id"] != first][:2]
    outcome = [
        {"source": "live", "why": "", "backend": "ollama", "record_id": 7, "latency_ms": 812.4,
         "prompt_tokens": 350, "completion_tokens": 61, "before_cutoff": True},
        {"source": "replay", "why": "", "backend": "ollama", "record_id": 3, "latency_ms": 0.0,
         "prompt_tokens": 340, "completion_tokens": 58, "before_cutoff": False},
        {"source": "fallback", "why": "gguf unavailable", "backend": "rule", "record_id": None,
         "latency_ms": 0.0, "prompt_tokens": 0, "completion_tokens": 0, "before_cutoff": False},
    ]  # fmt: skip
    stances = [("bullish", 0.81), ("bearish", 0.4), ("neutral", 0.5)]
    explanations = []
    for r, o, (stance, conf) in zip(rows, outcome, stances, strict=True):
        reasons = [f"trend is up {SCRIPT}", MARKUP] if o["source"] == "live" else [r["intent_reason"]]
        risks = ["a gap down through the stop"] if o["source"] == "live" else []
        explanations.append(
            {
                "intent_id": r["intent_id"], "ts": r["ts"], "symbol": r["symbol"], "kind": r["kind"],
                "status": r["status"], "stance": stance, "confidence": conf,
                "reasons": json.dumps(reasons), "risks": json.dumps(risks),
                "text": f"{stance} ({conf:.2f}): " + "; ".join(reasons),
                "model": MODEL, "prompt_hash": _hash(r), **o,
            }
        )  # fmt: skip
    advice = []
    for r, o, (action, scale) in zip(
        rows, outcome, [("scale", 0.5), ("veto", 0.0), ("approve", 1.0)], strict=True
    ):
        qty = float(r["qty_approved"])
        after = qty if o["source"] == "fallback" else float(int(qty * scale))
        advice.append(
            {
                "intent_id": r["intent_id"], "ts": r["ts"], "symbol": r["symbol"], "action": action,
                "scale_asked": scale, "scale_applied": scale if o["source"] != "fallback" else 1.0,
                "qty_before": qty, "qty_after": after, "confidence": 0.6,
                "reasons": json.dumps([f"{action}: crowded trade {SCRIPT}"]), "risks": json.dumps([]),
                "text": f"{action} x{scale:.2f} (0.60): crowded trade {SCRIPT}",
                "model": MODEL, "prompt_hash": _hash(r), **o,
            }
        )  # fmt: skip
    summaries = [
        {
            "symbol": sym, "ts": pd.Timestamp("2017-06-01 21:00", tz="UTC"), "headlines": n, "score": s,
            "confidence": 0.7, "reasons": json.dumps(["earnings beat"]),
            "text": f"{s:+.2f} (0.70): earnings beat",
            "model": MODEL, "prompt_hash": "ab" * 32, **outcome[1],
        }
        for sym, n, s in (("SPY", 4, 0.3), ("QQQ", 2, -0.2))
    ]  # fmt: skip
    stats = LLMStats(
        mode="live",
        backend="ollama",
        model=MODEL,
        fallbacks_chain=("gguf",),
        max_calls=50,
        max_tokens=20_000,
        timeout_s=30.0,
        retries=1,
        concurrency=2,
        cutoff=CUTOFF,
        calls=5,
        failed_calls=1,
        prompt_tokens=1_380,
        completion_tokens=238,
        latency_ms=[640.0, 812.4, 990.1],
        outcomes=Counter(
            {
                "explain:live": 1,
                "explain:replay": 1,
                "explain:fallback": 1,
                "advise:live": 1,
                "advise:replay": 1,
                "advise:fallback": 1,
                "summarise:replay": 2,
            }
        ),  # fmt: skip
        fallbacks=Counter({"gguf unavailable": 2}),
        before_cutoff=2,
        down=["gguf"],
        replay_sources={"journal": 3, "configs/tapes/ai.jsonl": 12},
        warnings=[f"llm: a warning with {SCRIPT}"],
    ).as_dict()
    return LLMRunResult(
        stats=stats,
        explanations=pd.DataFrame(explanations, columns=EXPLANATION_COLUMNS),
        advice=pd.DataFrame(advice, columns=ADVICE_COLUMNS),
        summaries=pd.DataFrame(summaries, columns=SUMMARY_COLUMNS),
        scope="entries",
        roles={"explain": True, "advise": True, "summarise": True},
    )


def with_llm(result: RunResult) -> RunResult:
    """A copy of ``result`` with :func:`make_llm` attached (the shared run stays without)."""
    return dataclasses.replace(result, llm=make_llm(result))


def read_html(folder: Path, name: str = "report.html") -> str:
    return (folder / name).read_text(encoding="utf-8")
