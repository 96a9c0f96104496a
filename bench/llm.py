"""LLM costs per decision: replaying a recorded explanation, and asking the in-process model.

Decisions: real ones, the first 200 intents (verdicts plus the AI brain's rows) of an ``ai_ensemble``
backtest on the sample (SPY, QQQ, TLT, GLD, AAPL; 2019-2024; linear model), built once.

- ``replay_ms_per_decision``: ``LLMService.ask`` in replay mode (prompt built, hashed, looked up
  among 20,000 recorded replies, the reply validated), median over the decisions; baseline in the
  same process: the rule-based explanation alone (``rule_ms_per_decision``), and their ratio.
- ``lookup_us``: the bare index lookup.
- ``explain_s_per_decision``, ``tokens_per_s``, ``prompt_tokens``, ``completion_tokens``: the packaged
  Gemma 3 270M in-process (``[llm] backend = "gguf"``) on 5 decisions, when the ``llm`` extra is
  installed (skipped otherwise); ``llm_to_replay`` compares it with the replay.

Target: replay under 1 ms per decision.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import peak_rss_mb, process_seconds, write

from hflite.ai.llm.config import LLMConfig
from hflite.ai.llm.gguf import available
from hflite.ai.llm.journal import CallRecord, LLMJournal, prompt_hash
from hflite.ai.llm.roles import explain_job, facts_from_rows, rule_explanation
from hflite.ai.llm.service import LLMService, model_id
from hflite.config import load_settings
from hflite.data.sample import ensure_sample
from hflite.data.store import Store
from hflite.engine.run import backtest

N_RECORDS = 20_000
N_LIVE = 5


def decisions(tmp: Path) -> list:
    store = Store(tmp / "store")
    ensure_sample(store)
    settings = load_settings(
        None,
        {
            "run": {
                "symbols": ["SPY", "QQQ", "TLT", "GLD", "AAPL"],
                "start": "2019-01-02",
                "end": "2024-06-28",
            },
            "strategy": {"name": "ai_ensemble", "enter": 0.2, "min_confidence": 0.15},
            "data": {"dir": str(store.root)},
            "ai": {"registry_dir": str(tmp / "models"), "model": {"kind": "linear"}, "ablation": False},
            "llm": {"mode": "off"},
        },
    )
    result = backtest(settings, store)
    rows = {str(r["intent_id"]): r for r in result.ai.decisions.to_dict("records")}
    verdicts = result.verdicts.to_dict("records")[:200]
    return [facts_from_rows(v, rows.get(str(v["intent_id"]))) for v in verdicts]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        facts = decisions(tmp)
        cfg = LLMConfig(journal=tmp / "journal.sqlite")
        model = model_id(cfg)
        journal = LLMJournal(cfg.journal)
        jobs = [explain_job(f) for f in facts]
        reply = '{"stance": "bullish", "confidence": 6, "reasons": [1], "risks": []}'
        for k in range(N_RECORDS):  # the decisions' own replies, then filler of other prompts
            if k < len(jobs):
                digest = prompt_hash("explain", jobs[k].messages, jobs[k].json_schema())
            else:
                digest = f"{k:064x}"
            journal.record(
                CallRecord("explain", "gguf", model, digest, "2020-01-01T00:00:00+00:00", reply, True)
            )
        journal.close()
        service = LLMService(cfg, "replay", base_dir=tmp)
        replay_ms, rule_ms = [], []
        for f in facts:
            t0 = time.perf_counter()
            out = service.ask(explain_job(f))
            replay_ms.append((time.perf_counter() - t0) * 1000)
            assert out.source == "replay", out.why
            t0 = time.perf_counter()
            rule_explanation(f)
            rule_ms.append((time.perf_counter() - t0) * 1000)
        digest = prompt_hash("explain", jobs[0].messages, jobs[0].json_schema())
        t0 = time.perf_counter()
        for _ in range(10_000):
            service.index.get("explain", model, digest)
        lookup_us = (time.perf_counter() - t0) / 10_000 * 1e6
        figures = {
            "decisions": len(facts),
            "recorded_replies": N_RECORDS,
            "replay_ms_per_decision": statistics.median(replay_ms),
            "rule_ms_per_decision": statistics.median(rule_ms),
            "replay_to_rule": statistics.median(replay_ms) / statistics.median(rule_ms),
            "lookup_us": lookup_us,
        }
        why_not = available(cfg.gguf)
        if why_not is None:
            live = LLMService(cfg.model_copy(update={"journal": tmp / "live.sqlite"}), "live", base_dir=tmp)
            live.ask(explain_job(facts[0]))  # load the model (not timed)
            took, tokens, prompt = [], [], []
            for f in facts[1 : N_LIVE + 1]:
                out = live.ask(explain_job(f))
                took.append(out.latency_ms / 1000)
                tokens.append(out.completion_tokens)
                prompt.append(out.prompt_tokens)
            live.close()
            figures.update(
                {
                    "explain_s_per_decision": statistics.median(took),
                    "tokens_per_s": sum(tokens) / sum(took),
                    "prompt_tokens": statistics.median(prompt),
                    "completion_tokens": statistics.median(tokens),
                    "llm_to_replay": statistics.median(took) * 1000 / statistics.median(replay_ms),
                }
            )
        else:
            print(f"in-process model skipped: {why_not}", file=sys.stderr)
    figures["process_s"] = process_seconds()
    figures["peak_rss_mb"] = peak_rss_mb()
    write("llm", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
