"""The three LLM roles: what each is told, what it must answer, and its rule-based fallback.

- ``explain``: every decision in plain language, from its structured reasons (strategy reason, the
  three views' top factors, the model's outputs, the regime, the risk verdict).
- ``advise``: a portfolio manager's second look at an entry risk approved; it may keep, shrink (down
  to ``[llm.advise_bounds] min_scale``) or veto it, never enlarge it (``hflite.risk.gate.shrink``).
- ``summarise``: one ticker's headlines of one day as a sentiment score with reasons, an extra input
  of the investor view.

Time honesty: a prompt holds only facts stamped at or before its as-of time. ``DecisionFacts`` are
the decision row at the decision's own bar; headlines are filtered to ``ts <= as_of`` and checked
again here (``TimeLeakError``) so a caller's slip cannot reach a model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hflite.ai.llm.base import Message
from hflite.ai.llm.schema import Advice, Explanation, NewsSummary, json_schema
from hflite.ai.llm.service import Job

__all__ = [
    "DecisionFacts",
    "candidates",
    "TimeLeakError",
    "advise_job",
    "explain_job",
    "facts_from_rows",
    "rule_advice",
    "rule_explanation",
    "rule_summary",
    "summarise_job",
]

VIEW_NAMES = ("banker", "investor", "market")
_MAX_TEXT = 200
_MAX_HEADLINES = 12

SYSTEM_EXPLAIN = (
    "You explain one trading decision to the person whose money it is. Use only the facts given; "
    "do not invent numbers or news. Reply with JSON: stance (bullish, bearish or neutral), "
    "confidence from 0 to 1, one to three short reasons, up to three risks."
)
SYSTEM_ADVISE = (
    "You are a cautious portfolio manager reviewing an entry that the risk manager already approved. "
    "You may approve it, scale it down (scale between 0 and 1) or veto it; you can never make it "
    "bigger. Use only the facts given. Reply with JSON: action (approve, scale or veto), scale, "
    "confidence, one to three reasons, up to three risks."
)
SYSTEM_EXPLAIN_GROUNDED = (
    "You explain one trading decision to the person whose money it is. Choose, from the facts listed, "
    "up to three reasons for the decision and up to three risks against it, most important first, "
    "by their numbers. Reply with JSON: stance (bullish, bearish or neutral), confidence in tenths "
    "(0 to 10), reasons (numbers), risks (numbers)."
)
SYSTEM_ADVISE_GROUNDED = (
    "You are a cautious portfolio manager reviewing an entry that the risk manager already approved. "
    "Approve it, scale it down or veto it; you can never make it bigger. Choose your reasons and "
    "risks from the facts listed, by their numbers. Reply with JSON: action (approve, scale or veto), "
    "scale in tenths (0 to 10), confidence in tenths (0 to 10), reasons (numbers), risks (numbers)."
)
SYSTEM_SUMMARISE = (
    "You rate news for a stock's price. Read the headlines, published up to the time given, and "
    "reply with JSON: score from -1 (very negative) to 1 (very positive), confidence from 0 to 1, "
    "one to three short reasons quoting the headlines."
)


class TimeLeakError(ValueError):
    """A prompt would have held data stamped after its as-of time."""


@dataclass(frozen=True)
class DecisionFacts:
    """Everything a decision's prompt may say, all known at ``ts``."""

    id: str
    ts: pd.Timestamp
    symbol: str
    kind: str  # entry | exit
    side: str  # buy | sell
    price: float
    strategy_reason: str
    status: str  # approved | resized | rejected
    qty_requested: float
    qty_approved: float
    risk_reason: str
    rules: tuple[str, ...] = ()
    values: dict[str, float] = field(default_factory=dict)
    views: dict[str, tuple[float, float, list[tuple[str, float, float]]]] = field(default_factory=dict)
    score: float = math.nan
    confidence: float = math.nan
    prob_up: float = math.nan
    exp_return: float = math.nan
    regime: str = ""


def _f(value: Any, default: float = math.nan) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out


def _s(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _json_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    try:
        out = json.loads(value) if isinstance(value, str) and value else []
    except ValueError:
        return []
    return out if isinstance(out, list) else []


def facts_from_rows(verdict: dict[str, Any], ai: dict[str, Any] | None = None) -> DecisionFacts:
    """Facts from a ``RunResult.verdicts`` row and, for the AI strategy, its ``ai_decisions`` row."""
    raw = verdict.get("values")
    values = raw if isinstance(raw, dict) else (json.loads(raw) if isinstance(raw, str) and raw else {})
    rules = verdict.get("rules")
    rule_list = (
        tuple(rules) if isinstance(rules, list | tuple) else tuple(r for r in _s(rules).split(";") if r)
    )
    views: dict[str, tuple[float, float, list[tuple[str, float, float]]]] = {}
    ai = ai or {}
    for v in (*VIEW_NAMES, "technical"):
        if v in ai and _f(ai.get(v)) == _f(ai.get(v)):
            reasons = [
                (str(r[0]), _f(r[1]), _f(r[2])) for r in _json_list(ai.get(f"{v}_reasons")) if len(r) == 3
            ]
            views[v] = (_f(ai.get(v)), _f(ai.get(f"{v}_conf"), 0.0), reasons)
    return DecisionFacts(
        id=_s(verdict.get("intent_id")),
        ts=pd.Timestamp(verdict["ts"]),
        symbol=_s(verdict.get("symbol")),
        kind=_s(verdict.get("kind")) or "entry",
        side=_s(verdict.get("side")),
        price=_f(verdict.get("price")),
        strategy_reason=_s(verdict.get("intent_reason")),
        status=_s(verdict.get("status")),
        qty_requested=_f(verdict.get("qty_requested"), 0.0),
        qty_approved=_f(verdict.get("qty_approved"), 0.0),
        risk_reason=_s(verdict.get("reason")),
        rules=rule_list,
        values={str(k): _f(x) for k, x in values.items()} if isinstance(values, dict) else {},
        views=views,
        score=_f(ai.get("score")),
        confidence=_f(ai.get("confidence")),
        prob_up=_f(ai.get("prob_up")),
        exp_return=_f(ai.get("exp_return")),
        regime=_s(ai.get("regime")),
    )


# -- prompts ------------------------------------------------------------------------------------
def _num(x: float, fmt: str = ".3g") -> str:
    return "unknown" if x != x else format(x, fmt)


def _when(ts: pd.Timestamp) -> str:
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
    return f"{t:%Y-%m-%d %H:%M} UTC"


def _head(f: DecisionFacts) -> str:
    """The decision and the risk verdict, without the facts behind it."""
    verdict = f"{f.status}: {_num(f.qty_requested, '.6g')} -> {_num(f.qty_approved, '.6g')} units"
    return "\n".join(
        [
            f"As of {_when(f.ts)}.",
            f"Decision: {f.kind} {f.side} {f.symbol} at {_num(f.price, '.6g')}.",
            f"Risk manager: {verdict} ({f.risk_reason}).",
        ]
    )


def _facts_text(f: DecisionFacts, *, with_verdict: bool = True) -> str:
    lines = [
        f"As of {_when(f.ts)}.",
        f"Decision: {f.kind} {f.side} {f.symbol} at {_num(f.price, '.6g')}.",
        f"Strategy: {f.strategy_reason}",
    ]
    for name, (score, conf, reasons) in f.views.items():
        if name == "technical":
            continue
        top = "; ".join(f"{n} = {_num(v)} ({c:+.2f})" for n, v, c in reasons[:3]) or "no known inputs"
        lines.append(f"{name.capitalize()} view {score:+.2f} (confidence {conf:.2f}): {top}.")
    if f.prob_up == f.prob_up:
        lines.append(f"Model: P(up) {f.prob_up:.2f}, expected return {_num(f.exp_return * 100, '+.2f')}%.")
    if f.regime:
        lines.append(f"Market regime: {f.regime}.")
    if not f.views and f.values:
        shown = ", ".join(f"{k} {_num(v)}" for k, v in list(f.values.items())[:8])
        lines.append(f"Indicators: {shown}.")
    if with_verdict:
        verdict = f"{f.status}: {_num(f.qty_requested, '.6g')} -> {_num(f.qty_approved, '.6g')} units"
        lines.append(f"Risk manager: {verdict} ({f.risk_reason}).")
    return "\n".join(lines)


def candidates(f: DecisionFacts) -> tuple[list[str], list[str]]:
    """The decision's own facts as short lines: those that may support it and those against it
    (the grounded roles choose their reasons and risks among them)."""
    stance = _stance(f)
    sign = 1.0 if stance == "bullish" else -1.0 if stance == "bearish" else 0.0
    support = [_clip(f.strategy_reason)] if f.strategy_reason else []
    against: list[str] = []
    for name, (score, _conf, reasons) in f.views.items():
        if name == "technical":
            continue
        for factor, value, contrib in reasons[:3]:
            line = _clip(f"{name} view {score:+.2f}: {factor} = {_num(value)} ({contrib:+.2f})")
            (against if sign != 0 and contrib * sign < 0 else support).append(line)
    if f.prob_up == f.prob_up:
        line = f"model P(up) {f.prob_up:.2f}, expected return {_num(f.exp_return * 100, '+.2f')}%"
        (against if (f.prob_up - 0.5) * sign < 0 else support).append(line)
    if f.regime:
        (against if f.regime in ("bear", "crisis") else support).append(f"market regime: {f.regime}")
    if not f.views:
        support += [_clip(f"{k} = {_num(v)}") for k, v in list(f.values.items())[:6]]
    if f.status in ("rejected", "resized"):
        against.insert(0, _clip(f"risk manager {f.status} it: {f.risk_reason}"))
    return list(dict.fromkeys(support)), list(dict.fromkeys(against))


def _numbered(schema: dict[str, Any], support: list[str], against: list[str]) -> dict[str, Any]:
    """``schema`` with reasons and risks as numbers of the listed facts (few tokens for a model to
    write, and nothing it can invent)."""
    out = json.loads(json.dumps(schema))
    props = out["properties"]
    for name in ("confidence", "scale"):  # in tenths: an enum a grammar enforces (number ranges it may not)
        if name in props:
            props[name] = {"type": "integer", "enum": list(range(11))}
    props["reasons"] = {
        "type": "array",
        "items": {"type": "integer", "enum": list(range(1, len(support) + 1))},
        "minItems": 1,
        "maxItems": min(3, len(support)),
    }
    first = len(support) + 1
    props["risks"] = (
        {
            "type": "array",
            "items": {"type": "integer", "enum": list(range(first, first + len(against)))},
            "maxItems": min(3, len(against)),
        }
        if against
        else {"type": "array", "maxItems": 0}
    )
    return out


def _decoder(model: type[Any], support: list[str], against: list[str]) -> Any:
    """Reply (parsed JSON with fact numbers) -> ``model`` with the facts' text; ValueError if a
    number is not one of the listed facts or the rest does not validate."""
    lines = [*support, *against]
    first_risk = len(support) + 1

    def pick(numbers: Any, lo: int, hi: int, what: str) -> list[str]:
        if not isinstance(numbers, list):
            raise ValueError(f"{what}: expected a list of fact numbers")
        out = []
        for n in numbers:
            if not isinstance(n, int) or isinstance(n, bool) or not lo <= n <= hi:
                raise ValueError(f"{what}: {n!r} is not the number of a listed fact ({lo}..{hi})")
            out.append(lines[n - 1])
        return out

    def decode(payload: Any) -> Any:
        if not isinstance(payload, dict):
            raise ValueError("expected a JSON object")
        data = dict(payload)
        for name in ("confidence", "scale"):
            if name in data:
                tenths = data[name]
                if not isinstance(tenths, int) or isinstance(tenths, bool) or not 0 <= tenths <= 10:
                    raise ValueError(f"{name}: {tenths!r} is not a whole number of tenths from 0 to 10")
                data[name] = tenths / 10
        data["reasons"] = pick(data.get("reasons"), 1, len(support), "reasons")
        data["risks"] = pick(data.get("risks", []), first_risk, len(lines), "risks")
        return model.model_validate(data)

    return decode


def _listing(support: list[str], against: list[str]) -> str:
    n = len(support)
    body = ["Facts for it:", *(f"{k}. {line}" for k, line in enumerate(support, 1))]
    body += ["Facts against it:", *(f"{k}. {line}" for k, line in enumerate(against, n + 1))]
    if not against:
        body.append("(none)")
    return "\n".join(body)


def _decision_job(
    role: str,
    f: DecisionFacts,
    grounded: bool,
    model: type[Explanation] | type[Advice],
    system: tuple[str, str],  # (free text, grounded)
    fallback: Callable[[], Any],
) -> Job:
    """A role's job for one decision: grounded (the decision's facts listed by number, the reply
    names them) or free text."""
    support, against = candidates(f)
    if not grounded or not support:
        messages = (Message("system", system[0]), Message("user", _facts_text(f)))
        return Job(role, f.id, f.ts, messages, model, fallback)
    text = f"{_head(f)}\n\n{_listing(support, against)}"
    messages = (Message("system", system[1]), Message("user", text))
    schema = _numbered(json_schema(model), support, against)
    return Job(role, f.id, f.ts, messages, model, fallback, schema, _decoder(model, support, against))


def explain_job(f: DecisionFacts, grounded: bool = True) -> Job:
    """Role ``explain`` for one decision (``grounded``: reasons and risks chosen, by number, among
    the decision's own facts; else free text)."""
    system = (SYSTEM_EXPLAIN, SYSTEM_EXPLAIN_GROUNDED)
    return _decision_job("explain", f, grounded, Explanation, system, lambda: rule_explanation(f))


def advise_job(f: DecisionFacts, grounded: bool = True) -> Job:
    """Role ``advise`` for one entry risk approved (``grounded`` as for ``explain_job``)."""
    system = (SYSTEM_ADVISE, SYSTEM_ADVISE_GROUNDED)
    return _decision_job("advise", f, grounded, Advice, system, lambda: rule_advice(f))


def summarise_job(symbol: str, as_of: pd.Timestamp, headlines: pd.DataFrame) -> Job:
    """Role ``summarise`` for one ticker's headlines known at ``as_of`` (columns ts, headline and,
    for the fallback, score)."""
    as_of = pd.Timestamp(as_of)
    ts = pd.to_datetime(headlines["ts"], utc=True)
    if len(ts) and ts.max() > as_of:
        raise TimeLeakError(
            f"summarise {symbol} as of {as_of}: a headline is stamped {ts.max()}, after the as-of time"
        )
    rows = headlines.assign(ts=ts).sort_values("ts", kind="stable").tail(_MAX_HEADLINES)
    listed = "\n".join(f"- {_clip(str(h), 160)}" for h in rows["headline"])
    text = f"As of {_when(as_of)}. Headlines about {symbol}:\n{listed}"
    messages = (Message("system", SYSTEM_SUMMARISE), Message("user", text))
    subject = f"{symbol} {as_of:%Y-%m-%d}"
    return Job("summarise", subject, as_of, messages, NewsSummary, lambda: rule_summary(rows))


# -- rule-based fallbacks -----------------------------------------------------------------------
def _clip(text: str, n: int = _MAX_TEXT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _stance(f: DecisionFacts) -> str:
    if f.score == f.score:
        return "bullish" if f.score > 0.05 else "bearish" if f.score < -0.05 else "neutral"
    if f.kind == "exit":
        return "neutral"
    return "bullish" if f.side == "buy" else "bearish"


def _factor_lines(f: DecisionFacts) -> list[tuple[float, str]]:
    out = []
    for name, (score, _conf, reasons) in f.views.items():
        if name == "technical":
            continue
        for factor, value, contrib in reasons[:1]:
            out.append((contrib, f"{name} view {score:+.2f}: {factor} = {_num(value)} ({contrib:+.2f})"))
    return out


def rule_explanation(f: DecisionFacts) -> Explanation:
    """The decision explained from its structured reasons alone (no model)."""
    stance = _stance(f)
    sign = 1.0 if stance == "bullish" else -1.0 if stance == "bearish" else 0.0
    factors = _factor_lines(f)
    supporting = [t for c, t in sorted(factors, key=lambda x: -abs(x[0])) if sign == 0 or c * sign > 0]
    against = [t for c, t in sorted(factors, key=lambda x: -abs(x[0])) if sign != 0 and c * sign < 0]
    reasons = [_clip(f.strategy_reason or f"{f.kind} {f.side} {f.symbol}")]
    reasons += [_clip(t) for t in supporting[:2]]
    risks: list[str] = []
    if f.status == "rejected":
        risks.append(_clip(f"risk manager rejected it: {f.risk_reason}"))
    elif f.status == "resized":
        risks.append(_clip(f"risk manager cut it ({', '.join(f.rules) or 'caps'}): {f.risk_reason}"))
    risks += [_clip(f"against it: {t}") for t in against[:1]]
    if f.regime in ("bear", "crisis"):
        risks.append(f"market regime is {f.regime}")
    conf = f.confidence if f.confidence == f.confidence else 0.5
    return Explanation(
        stance=stance, confidence=float(np.clip(conf, 0, 1)), reasons=reasons[:3], risks=risks[:3]
    )


def rule_advice(f: DecisionFacts) -> Advice:
    """No model: keep what risk approved."""
    conf = f.confidence if f.confidence == f.confidence else 0.5
    return Advice(
        action="approve",
        scale=1.0,
        confidence=float(np.clip(conf, 0, 1)),
        reasons=["rule-based: the risk-approved size is kept"],
        risks=[],
    )


def rule_summary(headlines: pd.DataFrame) -> NewsSummary:
    """The day's headlines by their rule-based scores (``score`` column, else neutral)."""
    scores = (
        pd.to_numeric(headlines["score"], errors="coerce").to_numpy(dtype=float)
        if "score" in headlines
        else np.zeros(len(headlines))
    )
    known = scores[~np.isnan(scores)]
    mean = float(known.mean()) if len(known) else 0.0
    agree = float(abs(known.sum()) / np.abs(known).sum()) if len(known) and np.abs(known).sum() > 0 else 0.0
    order = np.argsort(-np.abs(np.nan_to_num(scores)))[:2]
    reasons = [_clip(f"{scores[k]:+.2f}: {headlines['headline'].iloc[k]}") for k in order] or ["no headlines"]
    return NewsSummary(
        score=float(np.clip(mean, -1, 1)),
        confidence=float(np.clip(min(1.0, len(known) / 5.0) * agree, 0, 1)),
        reasons=reasons,
    )


def render(value: Any) -> str:
    """One line of plain language from an Explanation, Advice or NewsSummary."""
    if isinstance(value, Explanation):
        text = f"{value.stance} ({value.confidence:.2f}): " + "; ".join(value.reasons)
        return text + (f". Risks: {'; '.join(value.risks)}" if value.risks else "")
    if isinstance(value, Advice):
        act = f"scale x{value.scale:.2f}" if value.action == "scale" else value.action
        return f"{act} ({value.confidence:.2f}): " + "; ".join(value.reasons)
    if isinstance(value, NewsSummary):
        return f"{value.score:+.2f} ({value.confidence:.2f}): " + "; ".join(value.reasons)
    return str(value)
