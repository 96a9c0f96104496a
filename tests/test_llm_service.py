"""The LLM service: replay, live calls, validation, retries, budgets, backend fallbacks, the journal,
tapes and training cutoffs; the roles' prompts (time honesty) and fallbacks; the advisor's bounds."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hflite.ai.llm.base import LLMReply, LLMRequest, LLMTimeout, LLMUnavailable, ModelInfo
from hflite.ai.llm.config import LLMConfig
from hflite.ai.llm.journal import prompt_hash, read_tape, write_tape
from hflite.ai.llm.passes import LLMAdvisor
from hflite.ai.llm.roles import (
    TimeLeakError,
    explain_job,
    facts_from_rows,
    rule_explanation,
    summarise_job,
)
from hflite.ai.llm.schema import Explanation, json_schema
from hflite.ai.llm.service import LLMService
from hflite.domain.instrument import instrument_for
from hflite.domain.order import Side
from hflite.domain.signal import IntentKind, OrderIntent, RiskVerdict, VerdictStatus
from hflite.risk.gate import shrink

#: Grounded replies name the decision's listed facts by number (1-6 for it, 7-8 against it).
GOOD = json.dumps({"stance": "bullish", "confidence": 7, "reasons": [3, 1], "risks": [8]})
BAD = json.dumps({"stance": "maybe", "confidence": 2, "reasons": []})
FREE = json.dumps(
    {"stance": "bullish", "confidence": 0.7, "reasons": ["the trend is up"], "risks": ["rates"]}
)


@dataclass
class Scripted:
    """A backend double: answers from a script of texts or exceptions, records every request."""

    script: list[object]
    backend: str = "gguf"
    model: str = "gemma-3-270m-q4_k_m"
    delay: float = 0.0
    requests: list[LLMRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def chat(self, request: LLMRequest) -> LLMReply:
        with self.lock:
            self.requests.append(request)
            item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        time.sleep(self.delay)
        if isinstance(item, Exception):
            raise item
        return LLMReply(str(item), self.model, self.backend, 50, 20, 0.01 + self.delay, "stop")

    def models(self, timeout_s: float = 5.0) -> list[ModelInfo]:
        return [ModelInfo(self.model)]

    def close(self) -> None:
        pass


VERDICT = {
    "intent_id": "ai_ensemble-SPY-d3",
    "ts": pd.Timestamp("2022-03-04 21:00", tz="UTC"),
    "symbol": "SPY",
    "kind": "entry",
    "side": "buy",
    "price": 432.17,
    "intent_reason": "AI ensemble +0.31 >= enter (confidence 0.45)",
    "status": "resized",
    "qty_requested": 150.0,
    "qty_approved": 105.0,
    "reason": "risk 0.75% of equity; cut by position cap 25% of equity",
    "rules": "position_pct",
    "values": json.dumps({"score": 0.31, "confidence": 0.45}),
}
AI_ROW = {
    "score": 0.31,
    "confidence": 0.45,
    "banker": -0.2,
    "banker_conf": 0.3,
    "banker_reasons": json.dumps([["policy rate change", 1.25, -0.15]]),
    "investor": 0.1,
    "investor_conf": 0.2,
    "investor_reasons": json.dumps([["fear (VIX)", -0.4, 0.08]]),
    "market": 0.6,
    "market_conf": 0.7,
    "market_reasons": json.dumps([["ML P(up)", 0.58, 0.25], ["trend 50/200", 0.04, 0.1]]),
    "prob_up": 0.58,
    "exp_return": 0.004,
    "regime": "bull",
}


def _facts():
    return facts_from_rows(VERDICT, AI_ROW)


def _service(tmp_path: Path, mode: str = "live", backends=None, **cfg) -> LLMService:
    config = LLMConfig(journal=tmp_path / "journal.sqlite", **cfg)
    return LLMService(config, mode, base_dir=tmp_path, backends=backends or {})


# -- prompts and fallbacks ----------------------------------------------------------------------
def test_explain_prompt_holds_the_structured_reasons_and_the_verdict() -> None:
    job = explain_job(_facts(), grounded=False)
    text = job.messages[1].content
    assert "As of 2022-03-04 21:00 UTC." in text
    assert "Decision: entry buy SPY at 432.17." in text
    assert (
        "Market view +0.60 (confidence 0.70): ML P(up) = 0.58 (+0.25); trend 50/200 = 0.04 (+0.10)." in text
    )
    assert "Model: P(up) 0.58, expected return +0.40%." in text
    assert "Risk manager: resized: 150 -> 105 units" in text
    assert job.as_of == VERDICT["ts"]


def test_grounded_explain_lists_the_facts_and_asks_for_their_numbers() -> None:
    job = explain_job(_facts())
    text = job.messages[1].content
    assert "Facts for it:\n1. AI ensemble +0.31 >= enter (confidence 0.45)\n" in text
    assert "3. market view +0.60: ML P(up) = 0.58 (+0.25)" in text
    assert "7. risk manager resized it: risk 0.75% of equity" in text
    assert "8. banker view -0.20: policy rate change = 1.25 (-0.15)" in text
    assert text.startswith("As of 2022-03-04 21:00 UTC.\nDecision: entry buy SPY at 432.17.\nRisk manager:")
    schema = job.json_schema()["properties"]
    assert schema["reasons"]["items"]["enum"] == [1, 2, 3, 4, 5, 6]
    assert schema["risks"]["items"]["enum"] == [7, 8]
    value = job.parse(GOOD)
    assert value.reasons == ["market view +0.60: ML P(up) = 0.58 (+0.25)", VERDICT["intent_reason"]]
    assert value.risks == ["banker view -0.20: policy rate change = 1.25 (-0.15)"]
    with pytest.raises(ValueError, match="not the number of a listed fact"):
        job.parse(json.dumps({"stance": "bullish", "confidence": 5, "reasons": [7], "risks": []}))
    with pytest.raises(ValueError, match="says nothing"):
        explain_job(_facts(), grounded=False).parse(
            json.dumps({"stance": "bullish", "confidence": 0.5, "reasons": ["bullish"], "risks": []})
        )
    no_risk = explain_job(
        facts_from_rows(
            {**VERDICT, "status": "approved"},
            {**AI_ROW, "banker": 0.2, "banker_reasons": json.dumps([["policy rate change", 1.25, 0.15]])},
        )
    )
    assert no_risk.json_schema()["properties"]["risks"] == {"type": "array", "maxItems": 0}
    repeated = {"stance": "bullish", "confidence": 5, "reasons": [3, 3, 1], "risks": []}
    assert len(job.parse(json.dumps(repeated)).reasons) == 2  # small models repeat: dropped


def test_free_text_explain_is_validated_by_the_schema_alone(tmp_path: Path) -> None:
    svc = _service(tmp_path, backends={"gguf": Scripted([FREE])}, grounded=False)
    out = svc.ask(explain_job(_facts(), grounded=False))
    assert out.source == "live" and out.value.reasons == ["the trend is up"]


def test_rule_explanation_reads_the_reasons_and_the_verdict() -> None:
    e = rule_explanation(_facts())
    assert e.stance == "bullish"
    assert e.confidence == pytest.approx(0.45)
    assert e.reasons[0] == VERDICT["intent_reason"]
    assert e.reasons[1] == "market view +0.60: ML P(up) = 0.58 (+0.25)"
    assert e.risks[0].startswith("risk manager cut it (position_pct)")
    assert e.risks[1] == "against it: banker view -0.20: policy rate change = 1.25 (-0.15)"


def test_summarise_refuses_a_headline_after_its_as_of_time() -> None:
    as_of = pd.Timestamp("2022-01-03 21:00", tz="UTC")
    news = pd.DataFrame(
        {
            "ts": [pd.Timestamp("2022-01-03 14:00", tz="UTC"), pd.Timestamp("2022-01-03 22:00", tz="UTC")],
            "headline": ["Apple hits $3 trillion", "Apple falls after hours"],
            "score": [0.6, -0.5],
        }
    )
    with pytest.raises(TimeLeakError, match="after the as-of time"):
        summarise_job("AAPL", as_of, news)
    job = summarise_job("AAPL", as_of, news.iloc[:1])
    assert "Apple hits $3 trillion" in job.messages[1].content
    fallback = job.fallback()
    assert fallback.score == pytest.approx(0.6)
    assert fallback.confidence == pytest.approx(0.2)  # one headline of five, all agreeing


# -- modes --------------------------------------------------------------------------------------
def test_off_mode_answers_with_the_fallback_and_says_so(tmp_path: Path) -> None:
    svc = _service(tmp_path, "off")
    out = svc.ask(explain_job(_facts()))
    assert out.source == "fallback" and out.why == "LLM off"
    assert out.value == rule_explanation(_facts())


def test_live_call_is_validated_and_recorded_with_its_provenance(tmp_path: Path) -> None:
    backend = Scripted([GOOD])
    svc = _service(tmp_path, backends={"gguf": backend})
    svc.run_id = "run-1"
    job = explain_job(_facts())
    out = svc.ask(job)
    assert out.source == "live" and out.value.stance == "bullish"
    request = backend.requests[0]
    assert request.schema == job.json_schema()
    assert request.schema["properties"]["stance"] == json_schema(Explanation)["properties"]["stance"]
    assert request.temperature == 0.0 and request.seed == 0
    rec = svc.journal.get(out.record_id)
    assert rec.valid and rec.reply == GOOD and rec.role == "explain" and rec.run_id == "run-1"
    assert rec.prompt_hash == prompt_hash("explain", job.messages, job.json_schema())
    assert rec.as_of == "2022-03-04T21:00:00+00:00"
    assert (rec.backend, rec.model, rec.prompt_tokens, rec.completion_tokens) == (
        "gguf",
        "gemma-3-270m-q4_k_m",
        50,
        20,
    )
    assert json.loads(rec.prompt)[1][1] == job.messages[1].content
    assert svc.stats.calls == 1 and svc.stats.tokens == 70


def test_an_invalid_reply_is_retried_with_the_error_then_accepted(tmp_path: Path) -> None:
    backend = Scripted([BAD, GOOD])
    svc = _service(tmp_path, backends={"gguf": backend}, retries=1)
    out = svc.ask(explain_job(_facts()))
    assert out.source == "live" and out.attempts == 2
    assert "That reply was invalid" in backend.requests[1].messages[-1].content
    records = svc.journal.records()
    assert [r.valid for r in records] == [False, True]
    assert "does not match the explain reply schema" in records[0].error
    assert records[0].prompt_hash == records[1].prompt_hash  # replay finds the retried answer


def test_invalid_replies_beyond_the_retries_fall_back_and_count(tmp_path: Path) -> None:
    svc = _service(tmp_path, backends={"gguf": Scripted([BAD])}, retries=2)
    out = svc.ask(explain_job(_facts()))
    assert out.source == "fallback" and out.why.startswith("gguf invalid reply")
    assert out.attempts == 3 and svc.stats.calls == 3
    assert svc.stats.fallbacks == {"gguf invalid reply": 1}


def test_call_budget_is_never_exceeded(tmp_path: Path) -> None:
    svc = _service(tmp_path, backends={"gguf": Scripted([GOOD])}, max_calls=2)
    outs = [svc.ask(explain_job(_facts())) for _ in range(4)]
    assert [o.source for o in outs] == ["live", "live", "fallback", "fallback"]
    assert outs[2].why == "budget: 2 calls spent"
    assert svc.stats.calls == 2


def test_token_budget_stops_calls_once_spent(tmp_path: Path) -> None:
    svc = _service(tmp_path, backends={"gguf": Scripted([GOOD])}, max_tokens=100)
    outs = [svc.ask(explain_job(_facts())) for _ in range(3)]
    assert [o.source for o in outs] == ["live", "live", "fallback"]  # 70, 140 >= 100
    assert outs[2].why == "budget: 100 tokens spent"


def test_a_down_backend_hands_over_to_the_next_and_is_skipped_after_two_refusals(tmp_path: Path) -> None:
    down = Scripted([LLMUnavailable("gguf: no model file")])
    ollama = Scripted([GOOD], backend="ollama")
    svc = _service(tmp_path, backends={"gguf": down, "ollama": ollama}, fallbacks=("ollama",))
    outs = [svc.ask(explain_job(_facts())) for _ in range(3)]
    assert [o.source for o in outs] == ["live"] * 3
    assert [o.backend for o in outs] == ["ollama"] * 3
    assert len(down.requests) == 2  # then skipped for the rest of the run
    assert svc.stats.down == ["gguf"]


def test_every_backend_down_gives_fallbacks_not_errors(tmp_path: Path) -> None:
    svc = _service(
        tmp_path,
        backends={
            "gguf": Scripted([LLMUnavailable("refused")]),
            "ollama": Scripted([LLMTimeout("slow")], backend="ollama"),
        },
        fallbacks=("ollama",),
        retries=0,
    )
    outs = svc.ask_many([explain_job(_facts()) for _ in range(3)])
    assert all(o.source == "fallback" for o in outs)
    assert outs[0].why == "ollama timeout: slow"
    assert outs[2].why == "ollama timeout: slow"  # gguf is skipped once down
    assert svc.stats.count("fallback") == 3


def test_replay_reads_the_journal_and_misses_fall_back(tmp_path: Path) -> None:
    live = _service(tmp_path, backends={"gguf": Scripted([GOOD])})
    recorded = live.ask(explain_job(_facts()))
    live.close()
    replay = _service(tmp_path, "replay")
    again = replay.ask(explain_job(_facts()))
    assert again.source == "replay" and again.value == recorded.value
    assert again.record_id == recorded.record_id
    other = facts_from_rows({**VERDICT, "intent_id": "x", "price": 433.0}, AI_ROW)
    miss = replay.ask(explain_job(other))
    assert miss.source == "fallback" and miss.why == "no recorded reply"
    assert replay.stats.outcomes == {"explain:replay": 1, "explain:fallback": 1}
    assert replay.stats.calls == 0


def test_replay_never_calls_a_backend(tmp_path: Path) -> None:
    backend = Scripted([GOOD])
    svc = _service(tmp_path, "replay", backends={"gguf": backend})
    svc.ask(explain_job(_facts()))
    assert backend.requests == []


def test_a_tape_round_trip_replays_the_same_answers(tmp_path: Path) -> None:
    live = _service(tmp_path, backends={"gguf": Scripted([GOOD])})
    first = live.ask(explain_job(_facts()))
    tape = tmp_path / "tape.jsonl"
    assert write_tape(live.journal.records(), tape) == 1
    live.close()
    line = json.loads(tape.read_text())
    assert "prompt" not in line and line["prompt_hash"] == first.prompt_hash
    (tmp_path / "journal.sqlite").unlink()
    svc = LLMService(LLMConfig(journal=tmp_path / "none.sqlite", tapes=(tape,)), "replay", base_dir=tmp_path)
    out = svc.ask(explain_job(_facts()))
    assert out.source == "replay" and out.value == first.value
    assert svc.stats.replay_sources == {f"tape {tape}": 1}


def test_a_malformed_tape_names_its_line(tmp_path: Path) -> None:
    tape = tmp_path / "bad.jsonl"
    tape.write_text('{"role": "explain"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        list(read_tape(tape))


def test_answers_before_the_training_cutoff_are_flagged(tmp_path: Path) -> None:
    svc = _service(tmp_path, backends={"gguf": Scripted([GOOD])})
    assert svc.stats.cutoff == pd.Timestamp("2024-08-01").date()  # Gemma 3's model card
    out = svc.ask(explain_job(_facts()))  # a 2022 decision
    assert out.before_cutoff and svc.stats.before_cutoff == 1
    late = facts_from_rows({**VERDICT, "ts": pd.Timestamp("2024-09-02 20:00", tz="UTC")}, AI_ROW)
    assert not svc.ask(explain_job(late)).before_cutoff
    custom = LLMConfig(cutoffs={"my-model": "2020-01-01"}, ollama={"model": "my-model:7b"}, backend="ollama")
    assert custom.cutoff("my-model:7b") == pd.Timestamp("2020-01-01").date()


def test_concurrent_calls_keep_the_jobs_order(tmp_path: Path) -> None:
    backend = Scripted([GOOD], backend="ollama", delay=0.05)
    cfg = {"backend": "ollama", "concurrency": 4}
    svc = _service(tmp_path, backends={"ollama": backend}, **cfg)
    jobs = [
        explain_job(facts_from_rows({**VERDICT, "intent_id": f"d{k}", "price": 400.0 + k}, AI_ROW))
        for k in range(8)
    ]
    t0 = time.perf_counter()
    outs = svc.ask_many(jobs)
    assert [o.subject for o in outs] == [f"d{k}" for k in range(8)]
    assert time.perf_counter() - t0 < 8 * 0.05  # overlapped (4 at a time)


# -- the advisor ----------------------------------------------------------------------------------
def _verdict(qty: float = 100.0) -> RiskVerdict:
    return RiskVerdict("i1", "SPY", 0, VerdictStatus.APPROVED, qty, qty, "risk 0.75% of equity")


def _intent() -> OrderIntent:
    ts = int(pd.Timestamp("2022-03-04 21:00", tz="UTC").value)
    return OrderIntent(
        id="i1", symbol="SPY", kind=IntentKind.ENTRY, side=Side.BUY, ts=ts, bar_index=0,
        reason="AI ensemble +0.31", price=432.17, atr=5.0,
    )  # fmt: skip


def _advice(action: str, scale: float) -> str:
    tenths = round(scale * 10)
    return json.dumps({"action": action, "scale": tenths, "confidence": 6, "reasons": [1], "risks": []})


@pytest.mark.parametrize(
    ("action", "scale", "allow_veto", "qty", "status", "rule"),
    [
        ("approve", 1.0, True, 100.0, "approved", None),
        ("scale", 0.7, True, 70.0, "resized", "pm_scale"),
        ("scale", 0.1, True, 50.0, "resized", "pm_scale"),  # not below min_scale 0.5
        ("veto", 0.0, True, 0.0, "rejected", "pm_veto"),
        ("veto", 0.0, False, 50.0, "resized", "pm_scale"),  # veto not allowed: min_scale
    ],
)
def test_the_advisor_shrinks_or_vetoes_within_its_bounds(
    tmp_path: Path, action: str, scale: float, allow_veto: bool, qty: float, status: str, rule: str | None
) -> None:
    svc = _service(tmp_path, backends={"gguf": Scripted([_advice(action, scale)])})
    cfg = LLMConfig(advise_bounds={"min_scale": 0.5, "allow_veto": allow_veto})
    advisor = LLMAdvisor(svc, cfg.advise_bounds)
    out = advisor(_intent(), _verdict(), {"score": 0.31}, instrument_for("SPY"))
    assert out.qty_approved == qty and out.status.value == status
    assert (rule in out.rules) if rule else out.rules == ()
    row = advisor.frame().iloc[0]
    assert (row["qty_before"], row["qty_after"], row["source"]) == (100.0, qty, "live")


def test_an_advisor_that_falls_back_keeps_the_risk_approved_size(tmp_path: Path) -> None:
    svc = _service(tmp_path, backends={"gguf": Scripted([LLMUnavailable("down")])}, retries=0)
    advisor = LLMAdvisor(svc, LLMConfig().advise_bounds)
    before = _verdict()
    assert advisor(_intent(), before, {}, instrument_for("SPY")) == before
    assert advisor.frame().iloc[0]["why"].startswith("gguf unavailable")


@given(
    approved=st.floats(0, 1e7, allow_nan=False),
    scale=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(1.0), st.just(0.0)),
)
def test_shrink_never_raises_the_size(approved: float, scale: float) -> None:
    inst = instrument_for("SPY")
    approved = inst.round_qty(approved)
    before = RiskVerdict("i", "SPY", 0, VerdictStatus.APPROVED, approved, approved, "ok")
    after = shrink(before, scale, "pm_scale", "why", inst)
    assert 0.0 <= after.qty_approved <= before.qty_approved
    assert after.qty_approved == inst.round_qty(after.qty_approved)
    if after.qty_approved == 0 and approved > 0:
        assert after.status is VerdictStatus.REJECTED
