"""The report's LLM section and its files: the verdict first (how many answers came from the model, how
many were replayed, how many fell back and why), then the setup and what the run spent against its
budget, outcomes per role and source, fallbacks by reason, a warning when answers are about dates the
model may remember, the portfolio manager's vetoes and cuts, the news summaries and a sample of the
explanations, each linked to its decision's trail.

Renders an :class:`~hflite.ai.llm.passes.LLMRunResult` as it is (no recomputation). Everything a model
wrote is untrusted text: every cell is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pandas as pd

from hflite.ai.llm.passes import ADVICE_COLUMNS, EXPLANATION_COLUMNS, SUMMARY_COLUMNS
from hflite.analytics import report as _r
from hflite.analytics.report_ai import _VERDICT_INFO, _VERDICT_STYLE, _VERDICT_WARN, _float

if TYPE_CHECKING:
    from hflite.ai.llm.passes import LLMRunResult

__all__ = ["LLM_FILES", "llm_html", "llm_trail_ids", "llm_verdict", "trail_link", "write_llm_tables"]

#: Files :func:`write_llm_tables` writes.
LLM_FILES = ("llm_explanations.csv", "llm_advice.csv", "llm_summaries.csv", "llm_summary.json")

_ROLES = ("explain", "advise", "summarise")
_ROLE_NOUNS = {
    "explain": "explanations",
    "advise": "portfolio-manager answers",
    "summarise": "news summaries",
}
_SOURCES = ("live", "replay", "fallback")
_MODES = {
    "replay": "recorded replies only; never calls a model",
    "live": "calls the model; every reply is recorded in the journal",
    "off": "no model; every answer is rule-based",
}
_SCOPES = {
    "all": "every decision",
    "orders": "decisions that sent an order",
    "entries": "entries that sent an order",
}
_MAX_EXPLANATIONS = 10
_MAX_ADVICE_ROWS = 20
_MAX_SUMMARY_ROWS = 5
_DASH = "—"


# ------------------------------------------------------------------------------------------ files


def write_llm_tables(llm: LLMRunResult, folder: Path) -> list[str]:
    """Write ``llm_explanations.csv``, ``llm_advice.csv``, ``llm_summaries.csv`` (always with their
    columns, even when empty) and ``llm_summary.json`` (stats, scope, roles) into ``folder``; return the
    file names."""
    folder = Path(folder)
    tables = (
        ("llm_explanations.csv", llm.explanations, EXPLANATION_COLUMNS),
        ("llm_advice.csv", llm.advice, ADVICE_COLUMNS),
        ("llm_summaries.csv", llm.summaries, SUMMARY_COLUMNS),
    )
    written = []
    for name, frame, columns in tables:
        _r._with_columns(frame, list(columns)).to_csv(folder / name, index=False)
        written.append(name)
    payload = {
        "stats": llm.stats,
        "scope": llm.scope,
        "roles": llm.roles,
        "fallbacks": llm.fallbacks,
        "rows": {name.removesuffix(".csv"): len(_frame(frame)) for name, frame, _ in tables},
    }
    _r._write_json(folder / "llm_summary.json", payload)
    written.append("llm_summary.json")
    return written


# ------------------------------------------------------------------------------------- formatting


def _frame(frame: pd.DataFrame | None) -> pd.DataFrame:
    return pd.DataFrame() if frame is None else frame


def _explanations(llm: LLMRunResult) -> pd.DataFrame:
    return _r._with_columns(llm.explanations, EXPLANATION_COLUMNS)


def _advice(llm: LLMRunResult) -> pd.DataFrame:
    return _r._with_columns(llm.advice, ADVICE_COLUMNS)


def _summaries(llm: LLMRunResult) -> pd.DataFrame:
    return _r._with_columns(llm.summaries, SUMMARY_COLUMNS)


def _dict(value: Any) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    x = _float(value)
    return 0 if math.isnan(x) else int(x)


def _n(value: Any) -> str:
    return f"{_int(value):,}"


def _ratio(value: Any) -> str:
    x = _float(value)
    return _DASH if math.isnan(x) else f"{x:.2f}"


def _qty(value: Any) -> str:
    x = _float(value)
    return _DASH if math.isnan(x) else f"{x:,.6g}"


def _ms(value: Any) -> str:
    x = _float(value)
    return _DASH if math.isnan(x) else f"{x:,.0f} ms"


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>' if text else ""


def _box(text: str, warn: bool, kind: str) -> str:
    style = _VERDICT_STYLE + (_VERDICT_WARN if warn else _VERDICT_INFO)
    klass, role = (f"{kind} warn", "alert") if warn else (kind, "note")
    return f'<div class="{klass}" role="{role}" style="{style}">{escape(text)}</div>'


def trail_link(ident: Any, trails: Collection[str]) -> str:
    """HTML for a decision id: a link to its trail in trails.html when it has one, else the id."""
    text = _text(ident)
    if text not in trails:
        return escape(text)
    return f'<a href="trails.html#{escape(quote(text, safe=""))}">{escape(text)}</a>'


def _source(row: dict[str, Any]) -> str:
    source, why = _text(row.get("source")), _text(row.get("why"))
    return f"{source} ({why})" if source == "fallback" and why else source


# ---------------------------------------------------------------------------------------- verdict


def _outcomes(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """``{"explain:replay": 3, ...}`` as role -> source -> answers (roles in order, sources as given)."""
    out: dict[str, dict[str, int]] = {}
    raw = stats.get("outcomes") or {}
    for key, n in raw.items() if isinstance(raw, dict) else ():
        role, _, source = str(key).partition(":")
        out.setdefault(role, {})[source or "?"] = out.get(role, {}).get(source or "?", 0) + _int(n)
    order = [r for r in _ROLES if r in out] + sorted(set(out) - set(_ROLES))
    return {r: out[r] for r in order}


def _reasons(stats: dict[str, Any]) -> str:
    raw = stats.get("fallbacks") or {}
    pairs = [(str(k), _int(v)) for k, v in (raw.items() if isinstance(raw, dict) else ()) if _int(v)]
    if len(pairs) == 1:
        return pairs[0][0]
    return ", ".join(f"{k}: {v:,}" for k, v in pairs)


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def llm_verdict(llm: LLMRunResult) -> str:
    """One line: where the run's LLM answers came from and how many fell back, and why, e.g.
    "replay: 229 of 229 explanations replayed from recorded replies, 0 fallbacks"."""
    stats = llm.stats
    mode = _text(stats.get("mode")) or "off"
    counts = _outcomes(stats)
    total = sum(sum(c.values()) for c in counts.values())
    fallbacks = llm.fallbacks
    why = f" ({_reasons(stats)})" if fallbacks and _reasons(stats) else ""
    if total == 0:
        return f"{mode}: no LLM answers in this run (no role had anything to ask)"
    if mode == "off":
        return f"off: no model was asked; all {_plural(total, 'answer')} are rule-based{why}"
    done = "replay" if mode == "replay" else "live"
    parts = [
        f"{c.get(done, 0):,} of {sum(c.values()):,} {_ROLE_NOUNS.get(r, r + ' answers')}"
        for r, c in counts.items()
    ]
    if mode == "replay":
        return f"replay: {_and(parts)} replayed from recorded replies, {_plural(fallbacks, 'fallback')}{why}"
    calls = _int(stats.get("calls"))
    failed = _int(stats.get("failed_calls"))
    failed_text = f" ({failed:,} failed)" if failed else ""
    return (
        f"{mode}: {_plural(calls, 'call')}{failed_text}, {fallbacks:,} fell back{why}; "
        f"{_and(parts)} answered by the model"
    )


def _cutoff_warning(stats: dict[str, Any]) -> str:
    n = _int(stats.get("before_cutoff"))
    if n <= 0:
        return ""
    model = _text(stats.get("model")) or "the model"
    cutoff = _text(stats.get("training_cutoff")) or "(date not recorded)"
    verb = "answer is" if n == 1 else "answers are"
    text = (
        f"{n:,} {verb} about dates before {model}'s training cutoff {cutoff}: "
        "the model may know what happened next"
    )
    return _box(text, True, "llm-cutoff")


# --------------------------------------------------------------------------------------- the section


def llm_trail_ids(llm: LLMRunResult) -> list[str]:
    """The decision ids the section lists (its explanation sample and the advisor's cuts): the report
    writes their trails too, so every id it shows links to one."""
    ids = [_text(i) for i in _explanations(llm)["intent_id"].head(_MAX_EXPLANATIONS)]
    ids += [_text(i) for i in _cuts(_advice(llm))["intent_id"].head(_MAX_ADVICE_ROWS)]
    return [i for i in dict.fromkeys(ids) if i]


def llm_html(llm: LLMRunResult, trails: Collection[str] = ()) -> str:
    """The inner HTML of the report's LLM section (the caller wraps it in its ``<section>``); decision ids
    in ``trails`` link to ``trails.html#<id>``."""
    stats = llm.stats
    warn = llm.fallbacks > 0 or bool(stats.get("backends_down")) or _int(stats.get("failed_calls")) > 0
    parts = [
        _box(llm_verdict(llm), warn, "llm-verdict"),
        _cutoff_warning(stats),
        "<h3>Model, budget and cost</h3>",
        _setup_html(llm),
        "<h3>Answers by role and source</h3>",
        _outcomes_html(stats),
        "<h3>Fallbacks by reason</h3>",
        _fallbacks_html(stats),
    ]
    advice, summaries = _advice(llm), _summaries(llm)
    if not advice.empty:
        parts += ["<h3>Portfolio manager (advise)</h3>", _advice_html(advice, trails)]
    if not summaries.empty:
        parts += ["<h3>News summaries (summarise)</h3>", _summaries_html(summaries)]
    parts += ["<h3>Explanations</h3>", _explanations_html(llm, trails)]
    warnings = [str(w) for w in stats.get("warnings") or []]
    if warnings:
        items = "".join(f'<li class="warn">{escape(w)}</li>' for w in warnings)
        parts += ["<h3>LLM warnings</h3>", f"<ul>{items}</ul>"]
    return "".join(parts)


def _roles_text(llm: LLMRunResult) -> str:
    roles = llm.roles or {}
    if not roles:
        return _DASH
    out = []
    for role in [r for r in _ROLES if r in roles] + sorted(set(roles) - set(_ROLES)):
        on = bool(roles[role])
        text = f"{role} {'on' if on else 'off'}"
        if role == "explain" and on:
            text += f" (scope {llm.scope}: {_SCOPES.get(llm.scope, llm.scope)})"
        out.append(text)
    return ", ".join(out)


def _setup_html(llm: LLMRunResult) -> str:
    s = llm.stats
    budget = _dict(s.get("budget"))
    mode = _text(s.get("mode")) or "off"
    chain = [_text(s.get("backend")) or _DASH, *(str(b) for b in s.get("fallback_backends") or [])]
    sources = _dict(s.get("replay_sources"))
    median, top = s.get("latency_ms_median"), s.get("latency_ms_max")
    rows = [
        ["Mode", f"{mode} ({_MODES.get(mode, 'unknown mode')})"],
        ["Backend → fallbacks", " → ".join(chain) + ("" if len(chain) > 1 else " (no fallback backend)")],
        ["Model", _text(s.get("model")) or _DASH],
        ["Training cutoff", _text(s.get("training_cutoff")) or "not set (no answer is flagged)"],
        ["Roles", _roles_text(llm)],
        [
            "Calls made",
            f"{_n(s.get('calls'))} of at most {_n(budget.get('max_calls'))}"
            + (f" ({_n(s.get('failed_calls'))} failed)" if _int(s.get("failed_calls")) else ""),
        ],
        [
            "Tokens used",
            f"{_n(s.get('tokens'))} of at most {_n(budget.get('max_tokens'))} "
            f"({_n(s.get('prompt_tokens'))} prompt + {_n(s.get('completion_tokens'))} completion)",
        ],
        [
            "Timeout / retries / concurrency",
            f"{_float(budget.get('timeout_s')):g} s / {_n(budget.get('retries'))} / "
            f"{_n(budget.get('concurrency'))}",
        ],
        [
            "Latency (median / max)",
            f"{_ms(median)} / {_ms(top)}" if median is not None else f"{_DASH} (no model call)",
        ],
        ["Backends down", ", ".join(str(b) for b in s.get("backends_down") or []) or "none"],
        [
            "Replay sources",
            "; ".join(f"{k}: {_plural(_int(v), 'reply', 'replies')}" for k, v in sources.items())
            or "none loaded",
        ],
    ]
    return _r._table(["Setting", "Value"], rows, left=(0, 1), wrap=(1,))


def _outcomes_html(stats: dict[str, Any]) -> str:
    counts = _outcomes(stats)
    if not counts:
        return _note("No answers.")
    extra = sorted({src for c in counts.values() for src in c} - set(_SOURCES))
    sources = [*_SOURCES, *extra]
    labels = {"live": "Live", "replay": "Replayed", "fallback": "Fallback (rule-based)"}
    rows = [
        [_ROLE_NOUNS.get(role, role), *(f"{c.get(src, 0):,}" for src in sources), f"{sum(c.values()):,}"]
        for role, c in counts.items()
    ]
    if len(rows) > 1:
        totals = [sum(c.get(src, 0) for c in counts.values()) for src in sources]
        rows.append(["All", *(f"{t:,}" for t in totals), f"{sum(totals):,}"])
    header = ["Role", *(labels.get(s, s) for s in sources), "Total"]
    return _r._table(header, rows) + _note(
        "Live: the model answered during this run. Replayed: a reply recorded earlier for the same role, "
        "model and prompt. Fallback: the role's rule-based answer (the reasons are below)."
    )


def _fallbacks_html(stats: dict[str, Any]) -> str:
    raw = _dict(stats.get("fallbacks"))
    rows = [[str(reason), _n(n)] for reason, n in raw.items() if _int(n)]
    if not rows:
        return _note("No fallbacks: every answer came from the model.")
    return _r._table(["Reason", "Answers"], rows)


# ---------------------------------------------------------------------------------- advice, summaries


def _cuts(advice: pd.DataFrame) -> pd.DataFrame:
    """The advisor's vetoes and cuts: action scale or veto, or a smaller quantity after."""
    action = advice["action"].astype(str)
    before = pd.to_numeric(advice["qty_before"], errors="coerce")
    after = pd.to_numeric(advice["qty_after"], errors="coerce")
    return advice[action.isin(["scale", "veto"]).to_numpy() | (after < before).to_numpy()]


def _advice_html(advice: pd.DataFrame, trails: Collection[str]) -> str:
    action = advice["action"].astype(str)
    fell = advice["source"].astype(str) == "fallback"
    before = pd.to_numeric(advice["qty_before"], errors="coerce")
    after = pd.to_numeric(advice["qty_after"], errors="coerce")
    order = [a for a in ("approve", "scale", "veto") if a in set(action)] + sorted(
        set(action) - {"approve", "scale", "veto"}
    )
    rows = [
        [
            a,
            f"{int((action == a).sum()):,}",
            f"{int(((action == a) & fell).sum()):,}",
            _qty(before[action == a].sum()),
            _qty(after[action == a].sum()),
        ]
        for a in order
    ]
    parts = [
        _r._table(["Action", "Decisions", "Of which fallback (kept as is)", "Qty before", "Qty after"], rows),
        _note(
            "The portfolio manager sees each entry the risk manager approved; it may keep it, scale it down "
            "or veto it, never enlarge it. A fallback keeps the approved size."
        ),
    ]
    cuts = _cuts(advice)
    if cuts.empty:
        parts.append(_note("No entry was vetoed or scaled down."))
        return "".join(parts)
    shown = cuts.head(_MAX_ADVICE_ROWS)
    body = [
        [
            _r._ts(r.get("ts")),
            trail_link(r.get("intent_id"), trails),
            _text(r.get("symbol")),
            _text(r.get("action")),
            f"x{_ratio(r.get('scale_asked'))}",
            f"x{_ratio(r.get('scale_applied'))}",
            f"{_qty(r.get('qty_before'))} → {_qty(r.get('qty_after'))}",
            _source(r),
            _text(r.get("text")),
        ]
        for r in shown.to_dict("records")
    ]
    header = ["Time", "Decision", "Symbol", "Action", "Scale asked", "Applied", "Qty", "Source", "Answer"]
    parts.append("<h3>Vetoed or scaled down</h3>")
    parts.append(_r._table(header, body, html_columns=(1,), left=(0, 1, 2, 3, 7, 8), wrap=(8,)))
    if len(cuts) > len(shown):
        parts.append(_note(f"First {len(shown)} of {len(cuts):,}; every answer is in llm_advice.csv."))
    return "".join(parts)


def _summaries_html(summaries: pd.DataFrame) -> str:
    source = summaries["source"].astype(str)
    symbols = summaries["symbol"].astype(str).nunique()
    headlines = pd.to_numeric(summaries["headlines"], errors="coerce").sum()
    lead = (
        f"{len(summaries):,} summaries of {_plural(_int(headlines), 'headline')} about "
        f"{_plural(symbols, 'symbol')}; {int((source == 'fallback').sum()):,} rule-based (fallback). "
        "A model's score is an input of the investor view for the next few bars; a fallback adds nothing "
        "the rule-based news features do not already hold."
    )
    shown = summaries.head(_MAX_SUMMARY_ROWS)
    rows = [
        [
            _r._ts(r.get("ts")),
            _text(r.get("symbol")),
            _n(r.get("headlines")),
            _ratio(r.get("score")),
            _ratio(r.get("confidence")),
            _text(r.get("text")),
            _source(r),
        ]
        for r in shown.to_dict("records")
    ]
    header = ["Time", "Symbol", "Headlines", "Score", "Confidence", "Summary", "Source"]
    return (
        _note(lead)
        + _r._table(header, rows, left=(0, 1, 5, 6), wrap=(5,))
        + _note(f"First {len(shown)} of {len(summaries):,}; every summary is in llm_summaries.csv.")
    )


# ------------------------------------------------------------------------------------ explanations


def agreement(explanations: pd.DataFrame) -> str:
    """How often the model's stance agrees with the entries it explained (buy: bullish, sell:
    bearish): a plain check that its answers follow the facts, not a measure of skill."""
    frame = _frame(explanations)
    if frame.empty or "side" not in frame:
        return ""
    mine = frame[(frame["source"] != "fallback") & (frame["kind"] == "entry")]
    if mine.empty:
        return "No entry was explained by the model (every explanation is rule-based)."
    wanted = mine["side"].map({"buy": "bullish", "sell": "bearish"})
    agree = int((mine["stance"] == wanted).sum())
    return (
        f"The model's stance agrees with {agree:,} of the {len(mine):,} entries it explained "
        f"({agree / len(mine):.0%}: bullish on a buy, bearish on a sell)."
    )


def _explanations_html(llm: LLMRunResult, trails: Collection[str]) -> str:
    frame = _explanations(llm)
    if frame.empty:
        if llm.roles and not llm.roles.get("explain", False):
            return _note("The explain role was off: `hflite explain <id>` shows the rule-based explanation.")
        return _note(f"No decision in the explain scope ({llm.scope}).")
    stance = frame["stance"].fillna("").astype(str).value_counts()
    mix = " · ".join(f"{s or 'none'} {n:,}" for s, n in stance.items())
    shown = frame.head(_MAX_EXPLANATIONS)
    rows = [
        [
            _r._ts(r.get("ts")),
            trail_link(r.get("intent_id"), trails),
            _text(r.get("symbol")),
            _text(r.get("kind")),
            _text(r.get("stance")),
            _ratio(r.get("confidence")),
            _text(r.get("text")),
            _source(r),
        ]
        for r in shown.to_dict("records")
    ]
    header = ["Time", "Decision", "Symbol", "Kind", "Stance", "Confidence", "Explanation", "Source"]
    return (
        _note(f"{len(frame):,} explanations (scope {llm.scope}: {_SCOPES.get(llm.scope, llm.scope)}): {mix}.")
        + _note(agreement(frame))
        + _r._table(header, rows, html_columns=(1,), left=(0, 1, 2, 3, 4, 6, 7), wrap=(6,))
        + _note(
            f"The first {len(shown)} of {len(frame):,}; every explanation is in llm_explanations.csv with "
            "its model, backend, prompt hash and tokens. A decision id opens its trail; `hflite explain "
            "<id>` prints it, with the rule-based explanation for decisions outside the scope."
        )
    )
