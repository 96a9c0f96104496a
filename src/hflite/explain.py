"""``hflite explain``: the audit trail of one decision, read back from a report folder.

Two steps, kept apart so later sources (LLM reasoning, view scores) add fields to the trail and
panels to the page without touching the lookup: ``load_trail`` reads the folder into a
``DecisionTrail`` (plain data, no terminal), ``render_trail`` turns it into rich renderables.

A decision is found by its intent id (``trend-SPY-d12``, verdicts.csv) or by the id of an order it
produced (``trend-SPY-b252-3``, or its protective ``...-sl`` / ``...-tp`` children: orders.csv
carries each order's ``decision_id``).
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Group, RenderableType
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from hflite.domain.signal import Check

__all__ = [
    "DecisionTrail",
    "TrailError",
    "TrailIntent",
    "TrailVerdict",
    "latest_report",
    "load_trail",
    "report_dir",
    "render_trail",
    "suggest_ids",
]

#: What each risk check measures. Cap checks (position_pct ... order_usd) record the size before that
#: cap acted; a failed cap or scale check cut the order, a failed gate rejected it.
CHECK_MEANINGS: dict[str, str] = {
    "drawdown_pct": "drawdown from the peak, % (halt)",
    "orders_per_minute": "orders in the last minute",
    "collar_pct": "price vs the last price, % apart",
    "adv_usd": "avg daily dollar volume (minimum)",
    "open_positions": "open positions and entries",
    "drawdown_reduce_pct": "drawdown, % (size-down point)",
    "daily_loss_pct": "loss since the day's start, %",
    "weekly_loss_pct": "loss since the week's start, %",
    "monthly_loss_pct": "loss since the month's start, %",
    "regime_scale": "regime size multiplier",
    "vol_ratio": "volatility / its median",
    "correlation": "max correlation with a holding",
    "position_pct": "position, % of equity",
    "sector_pct": "sector exposure, % of equity",
    "class_pct": "asset class exposure, % of equity",
    "gross_exposure": "gross exposure, x equity",
    "net_exposure": "net exposure, x equity",
    "leverage": "leverage, x equity",
    "adv_share": "share of average volume",
    "order_usd": "order notional, USD",
}

_REPORT_MARKER = "verdicts.csv"
_MAX_SUGGESTIONS = 8


class TrailError(LookupError):
    """No report folder, or no decision with that id; the message says what to try instead."""


@dataclass(frozen=True)
class TrailIntent:
    """What the strategy asked for, and what it saw. ``price`` is in the quote currency."""

    id: str
    ts: pd.Timestamp
    symbol: str
    kind: str  # entry | exit
    side: str  # buy | sell
    reason: str
    price: float
    atr: float
    fx: float  # quote currency -> USD at the decision
    values: dict[str, float | None]  # the strategy's indicator values at the decision


@dataclass(frozen=True)
class TrailVerdict:
    """The risk gate's answer with every check it ran, in order."""

    status: str  # approved | resized | rejected
    qty_requested: float  # the size at the configured risk, before any cut
    qty_approved: float
    reason: str
    rules: tuple[str, ...]  # the rules that rejected or cut it
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class DecisionTrail:
    """One decision's audit trail: intent -> verdict -> orders -> fills -> trade, with the run's data
    versions. Rows of orders, fills and trades are plain dicts with the report's CSV columns (trades
    gain ``role``: opened or closed)."""

    folder: Path
    run_id: str
    strategy: str
    query: str
    matched_by: str  # how the query was found: "intent id" or "order <id>"
    intent: TrailIntent
    verdict: TrailVerdict
    orders: tuple[dict[str, Any], ...]
    fills: tuple[dict[str, Any], ...]
    trades: tuple[dict[str, Any], ...]
    data_versions: dict[str, str]
    notes: tuple[str, ...] = ()
    ai: dict[str, Any] | None = None  # the AI brain's row behind the intent (ai_decisions.csv)


# -------------------------------------------------------------------------------------- loading


def report_dir(config: Path | None = None) -> Path:
    """Where reports go (``report.dir``) without needing a whole run config: ``HFLITE_REPORT__DIR``,
    else the config file's ``[report] dir``, else the default ``reports``."""
    from hflite.config import ReportConfig

    env = os.environ.get("HFLITE_REPORT__DIR")
    if env:
        return Path(env)
    if config is None:
        return ReportConfig().dir
    try:
        section = tomllib.loads(Path(config).read_text(encoding="utf-8")).get("report", {})
        return ReportConfig.model_validate(section).dir
    except (OSError, ValueError) as exc:  # tomllib and pydantic errors are ValueErrors
        raise TrailError(f"--config: cannot read report.dir from {config}: {exc}") from None


def latest_report(root: Path) -> Path:
    """The most recently written report folder under ``root`` (a folder holding verdicts.csv)."""
    root = Path(root)
    found = (
        [
            p
            for p in root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / _REPORT_MARKER).is_file()
        ]
        if root.is_dir()
        else []
    )
    if not found:
        raise TrailError(
            f"no report folder under {root}: run `hflite backtest` first, or name one with --report DIR"
        )
    return max(found, key=lambda p: ((p / _REPORT_MARKER).stat().st_mtime, p.name))


def load_trail(folder: Path, ident: str) -> DecisionTrail:
    """The trail of the decision ``ident`` (an intent id or an order id) in the report ``folder``."""
    folder = Path(folder)
    if not (folder / _REPORT_MARKER).is_file():
        raise TrailError(f"{folder} is not a report folder (no {_REPORT_MARKER} in it)")
    verdicts = _read(folder, "verdicts.csv", ["ts"])
    orders = _read(folder, "orders.csv", ["created_ts", "closed_ts"])
    ident = ident.strip()
    intent_id, matched_by = _find(ident, verdicts, orders, folder)
    row = verdicts[verdicts["intent_id"] == intent_id].iloc[0].to_dict()
    mine = orders[orders["decision_id"] == intent_id] if "decision_id" in orders else orders.iloc[:0]
    _fill_legacy(row, mine)
    fills = _read(folder, "fills.csv", ["ts"])
    fills = fills[fills["order_id"].isin(mine["order_id"])] if "order_id" in fills else fills.iloc[:0]
    trades = _trades_of(row, mine, fills, _read(folder, "trades.csv", ["entry_ts", "exit_ts"]))
    checks, notes = _checks_of(folder, intent_id)
    meta = _json(folder / "metrics.json")
    config = _json(folder / "config.json")
    pins = config.get("data", {}).get("pin", {}) if isinstance(config.get("data"), dict) else {}
    return DecisionTrail(
        folder=folder,
        run_id=str(meta.get("run_id") or folder.name),
        strategy=str(meta.get("strategy_name") or config.get("strategy", {}).get("name", "")),
        query=ident,
        matched_by=matched_by,
        intent=TrailIntent(
            id=intent_id,
            ts=pd.Timestamp(row["ts"]),
            symbol=_str(row.get("symbol")),
            kind=_str(row.get("kind")),
            side=_str(row.get("side")),
            reason=_str(row.get("intent_reason")),
            price=_float(row.get("price")),
            atr=_float(row.get("atr")),
            fx=_float(row.get("fx"), 1.0),
            values=_values(row.get("values")),
        ),
        verdict=TrailVerdict(
            status=_str(row.get("status")),
            qty_requested=_float(row.get("qty_requested")),
            qty_approved=_float(row.get("qty_approved")),
            reason=_str(row.get("reason")),
            rules=tuple(r for r in _str(row.get("rules")).split(";") if r),
            checks=checks,
        ),
        orders=_records(mine.sort_values("created_ts", kind="stable")),
        fills=_records(fills.sort_values("ts", kind="stable")),
        trades=trades,
        data_versions={str(k): str(v) for k, v in sorted(pins.items())},
        notes=notes,
        ai=_ai_of(folder, intent_id),
    )


def _ai_of(folder: Path, intent_id: str) -> dict[str, Any] | None:
    """The AI brain's row behind an intent, with the run's model and feature summary."""
    path = folder / "ai_decisions.csv"
    if not path.is_file():
        return None
    rows = pd.read_csv(path)
    mine = rows[rows["intent_id"] == intent_id] if "intent_id" in rows else rows.iloc[:0]
    if mine.empty:
        return None
    out: dict[str, Any] = mine.iloc[0].to_dict()
    summary = _json(folder / "ai_summary.json")
    out["summary"] = summary.get("summary", summary) if isinstance(summary, dict) else {}
    for key in [k for k in out if k.endswith("_reasons")]:
        try:
            out[key] = json.loads(out[key]) if isinstance(out[key], str) else []
        except json.JSONDecodeError:
            out[key] = []
    return out


def _read(folder: Path, name: str, ts_columns: list[str]) -> pd.DataFrame:
    path = folder / name
    if not path.is_file():
        return pd.DataFrame()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for col in ts_columns:
        if col in frame:
            frame[col] = pd.to_datetime(frame[col].where(frame[col] != ""), utc=True, format="ISO8601")
    return frame


def _fill_legacy(row: dict[str, Any], orders: pd.DataFrame) -> None:
    """Reports written before the audit trail have no kind or side: infer them from the verdict's
    reason (exits are always "exit: ...") and the decision's own order."""
    if not _str(row.get("kind")):
        row["kind"] = "exit" if _str(row.get("reason")).startswith("exit:") else "entry"
    if not _str(row.get("side")) and not orders.empty:
        main = orders[orders["parent_id"] == ""] if "parent_id" in orders else orders
        row["side"] = str(main["side"].iloc[0]) if not main.empty else ""


def _json(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _find(ident: str, verdicts: pd.DataFrame, orders: pd.DataFrame, folder: Path) -> tuple[str, str]:
    """(intent id, how it was found) for an intent id or an order id."""
    intents = list(verdicts["intent_id"]) if "intent_id" in verdicts else []
    if ident in set(intents):
        return ident, "intent id"
    order_ids = list(orders["order_id"]) if "order_id" in orders else []
    if ident in set(order_ids):
        order = orders[orders["order_id"] == ident].iloc[0]
        decision = str(order.get("decision_id", ""))
        if decision in set(intents):
            return decision, f"order {ident}"
        raise TrailError(f"order {ident} in {folder} names no recorded decision (decision_id {decision!r})")
    pool = [*intents, *order_ids]
    hint = suggest_ids(ident, pool)
    more = len(suggest_ids(ident, pool, n=len(pool))) - len(hint)
    also = f"; ids that share its prefix: {', '.join(hint)}" if hint else ""
    also += f" and {more} more" if more > 0 else ""
    raise TrailError(
        f"no decision or order {ident!r} in {folder} ({len(intents)} decisions, "
        f"{len(order_ids)} orders){also}. Intent ids are in verdicts.csv, order ids in orders.csv"
    )


def _natural(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def suggest_ids(ident: str, ids: list[str], n: int = _MAX_SUGGESTIONS) -> list[str]:
    """Up to ``n`` ids close to ``ident``: those starting with it, else those sharing its longest prefix
    (case-insensitive), in natural order."""
    if not ids or not ident:
        return []
    low = ident.lower()
    pool = sorted(set(ids), key=_natural)
    starts = [i for i in pool if i.lower().startswith(low)]
    if starts:
        return starts[:n]
    shared = {i: len(os.path.commonprefix([low, i.lower()])) for i in pool}
    best = max(shared.values())
    if best < min(3, len(ident)):
        return []
    return [i for i in pool if shared[i] == best][:n]


def _checks_of(folder: Path, intent_id: str) -> tuple[tuple[Check, ...], tuple[str, ...]]:
    path = folder / "risk_checks.csv"
    if not path.is_file():
        return (), (f"{folder.name} predates the audit trail: it has no risk_checks.csv",)
    frame = pd.read_csv(path, dtype={"intent_id": str, "name": str})
    rows = frame[frame["intent_id"] == intent_id]
    checks = tuple(
        Check(str(r.name), float(r.value), float(r.limit), str(r.passed).lower() == "true")
        for r in rows.itertuples(index=False)
    )
    return checks, ()


def _trades_of(
    row: dict[str, Any], orders: pd.DataFrame, fills: pd.DataFrame, trades: pd.DataFrame
) -> tuple[dict[str, Any], ...]:
    """The trades this decision opened (its entry order's fills) or closed (its exit order's fills, or
    a protective child's), matched on symbol, direction and fill time. Each gains ``role``, e.g.
    "opened; closed by trend-SPY-b252-3-sl"."""
    if trades.empty or fills.empty or orders.empty:
        return ()
    symbol, side, kind = _str(row.get("symbol")), _str(row.get("side")), _str(row.get("kind"))
    children = set(orders.loc[orders["parent_id"] != "", "order_id"]) if "parent_id" in orders else set()
    mine = trades[trades["symbol"] == symbol]
    roles: dict[str, list[str]] = {}
    found: dict[str, dict[str, Any]] = {}
    for f in fills.itertuples(index=False):
        opens = kind == "entry" and f.order_id not in children
        if opens:
            direction, col, role = ("long" if side == "buy" else "short"), "entry_ts", "opened"
        else:
            direction, col = ("short" if f.side == "buy" else "long"), "exit_ts"
            role = f"closed by {f.order_id}" if f.order_id in children else "closed"
        for t in _records(mine[(mine[col] == f.ts) & (mine["direction"] == direction)]):
            found.setdefault(t["trade_id"], t)
            if role not in roles.setdefault(t["trade_id"], []):
                roles[t["trade_id"]].append(role)
    return tuple({"role": "; ".join(roles[tid]), **t} for tid, t in found.items())


def _records(frame: pd.DataFrame) -> tuple[dict[str, Any], ...]:
    return tuple({str(k): v for k, v in rec.items()} for rec in frame.to_dict("records"))


def _str(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _float(value: Any, default: float = math.nan) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(out) else out


def _values(text: Any) -> dict[str, float | None]:
    try:
        payload = json.loads(_str(text) or "{}")
    except ValueError:
        return {}
    return (
        {str(k): (None if v is None else float(v)) for k, v in payload.items()}
        if isinstance(payload, dict)
        else {}
    )


# ------------------------------------------------------------------------------------ rendering

_STATUS_STYLE = {"approved": "green", "resized": "yellow", "rejected": "red"}


def _num(value: Any) -> str:
    """A number for a person: thousands separators, about 6 significant digits; NaN as —."""
    x = _float(value)
    if math.isnan(x):
        return "—"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 1000:
        return f"{x:,.2f}"
    return f"{x:.6g}"


def _usd(value: Any) -> str:
    x = _float(value)
    return "—" if math.isnan(x) else f"{x:,.2f}"


def _when(value: Any) -> str:
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{pd.Timestamp(value):%Y-%m-%d %H:%M} UTC"


def _fields(title: str, rows: list[tuple[str, str | Text]]) -> Table:
    """A two-column name/value block (fits any terminal width: values fold)."""
    table = Table(title=title, title_justify="left", title_style="bold", show_header=False, box=None)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, value)
    return table


def render_trail(trail: DecisionTrail) -> Group:
    """The trail as rich renderables: intent, verdict, every check, orders, fills, trade, data versions."""
    parts: list[RenderableType] = [
        Rule(f"Decision {trail.intent.id}", align="left"),
        _intent_table(trail),
        _verdict_table(trail.verdict),
        *_ai_tables(trail.ai),
        _checks_table(trail),
        _orders_table(trail.orders),
        _fills_table(trail.fills),
        *_trade_tables(trail.trades),
        _versions_table(trail.data_versions),
    ]
    parts += [Text(f"note: {n}", style="yellow") for n in trail.notes]
    return Group(*parts)


def _ai_tables(ai: dict[str, Any] | None) -> list[RenderableType]:
    """The AI brain's decision: ensemble, the three views with their top reasons, the model."""
    if ai is None:
        return []
    summary = ai.get("summary") or {}
    head = _fields(
        "AI ensemble",
        [
            ("score", f"{_float(ai.get('score')):+.3f} (confidence {_float(ai.get('confidence')):.2f})"),
            ("model", f"{summary.get('model', '')} {_str(ai.get('model_id'))}".strip() or "none"),
            ("P(up)", _num(ai.get("prob_up"))),
            ("expected return", _num(ai.get("exp_return"))),
            ("regime", _str(ai.get("regime")) or "unknown"),
            (
                "features",
                f"{str(summary.get('feature_key', ''))[:12]} "
                f"(sentiment: {summary.get('sentiment_method', '')})",
            ),
        ],
    )
    views = Table(title="Views (top reasons: factor, value, contribution)", title_justify="left")
    for col in ("view", "score", "confidence", "reasons"):
        views.add_column(col, overflow="fold")
    for v in ("banker", "investor", "market", "technical"):
        if v not in ai:
            continue
        reasons = ai.get(f"{v}_reasons") or []
        text = "; ".join(f"{r[0]} = {_num(r[1])} ({float(r[2]):+.3f})" for r in reasons) or "no known inputs"
        views.add_row(v, f"{_float(ai.get(v)):+.3f}", f"{_float(ai.get(f'{v}_conf')):.2f}", text)
    return [head, views]


def _intent_table(trail: DecisionTrail) -> Table:
    it = trail.intent
    price = _num(it.price) + (f" (x {_num(it.fx)} = {_num(it.price * it.fx)} USD)" if it.fx != 1.0 else "")
    rows: list[tuple[str, str | Text]] = [
        ("Run", f"{trail.run_id} ({trail.strategy}), {trail.folder}"),
        ("Found by", trail.matched_by),
        ("Time", _when(it.ts)),
        ("Symbol", it.symbol),
        ("Intent", f"{it.kind} {it.side}".strip()),
        ("Strategy reason", it.reason),
        ("Price", price),
        ("ATR", _num(it.atr)),
    ]
    rows += [(f"  {name}", _num(v)) for name, v in it.values.items() if name != "atr"]
    return _fields("Intent", rows)


def _verdict_table(v: TrailVerdict) -> Table:
    status = Text(v.status.upper(), style=f"bold {_STATUS_STYLE.get(v.status, 'white')}")
    size = f"{_num(v.qty_requested)} -> {_num(v.qty_approved)}"
    if v.qty_requested > 0 and v.qty_approved != v.qty_requested:
        size += f" (kept {v.qty_approved / v.qty_requested:.1%})"
    rows: list[tuple[str, str | Text]] = [
        ("Status", status),
        ("Requested -> approved", size),
        ("Reason", v.reason),
        ("Rules", ", ".join(v.rules) or "none (nothing rejected or cut it)"),
    ]
    return _fields("Risk verdict", rows)


def _checks_table(trail: DecisionTrail) -> RenderableType:
    checks = trail.verdict.checks
    if not checks:
        why = (
            "exits are always allowed: the gate runs no checks on them"
            if trail.intent.kind == "exit"
            else "none was measured before the gate rejected it"
        )
        return Text(f"Risk checks: none ({why})", style="dim")
    table = Table(
        title=f"Risk checks ({len(checks)}, in the order the gate ran them)",
        title_justify="left",
        title_style="bold",
        caption="Caps record the size before that cap acted. A failed cap or scale check cut the order; "
        "a failed gate rejected it. Gates that are states rather than measures (kill, pause, "
        "breakers, protections, shorting) show in the verdict's rules and reason.",
        caption_justify="left",
    )
    table.add_column("Check", no_wrap=True)
    table.add_column("Value", justify="right", no_wrap=True)
    table.add_column("Limit", justify="right", no_wrap=True)
    table.add_column("Result", no_wrap=True)
    table.add_column("Measures", overflow="fold", style="dim")
    for c in checks:
        result = Text("pass", style="green") if c.passed else Text("FAIL", style="bold red")
        meaning = CHECK_MEANINGS.get(c.name.split(":", 1)[0], "")
        table.add_row(c.name, _num(c.value), _num(c.limit), result, meaning)
    return table


def _orders_table(orders: tuple[dict[str, Any], ...]) -> RenderableType:
    if not orders:
        return Text("Orders: none (nothing was approved)", style="dim")
    table = Table(title="Orders", title_justify="left", title_style="bold")
    table.add_column("Order", no_wrap=True)
    for col in ("What", "Status", "Filled", "Created", "Closed"):
        table.add_column(col, overflow="fold")
    for o in orders:
        what = f"{o.get('type', '')} {o.get('side', '')} {_num(o.get('qty'))}"
        if o.get("price"):
            what += f" @ {_num(o.get('price'))}"
        if o.get("parent_id"):
            what += f" ({o.get('reason', '')})"
        filled = _num(o.get("filled_qty"))
        if o.get("avg_fill_price"):
            filled += f" @ {_num(o.get('avg_fill_price'))}"
        table.add_row(
            str(o.get("order_id", "")),
            what,
            str(o.get("status", "")),
            filled,
            _when(o.get("created_ts")),
            _when(o.get("closed_ts")),
        )
    return table


def _fills_table(fills: tuple[dict[str, Any], ...]) -> RenderableType:
    if not fills:
        return Text("Fills: none", style="dim")
    table = Table(title="Fills", title_justify="left", title_style="bold")
    table.add_column("Order", no_wrap=True)
    table.add_column("Time", overflow="fold")
    for col in ("Side qty", "Price", "Notional USD", "Fee USD", "Slippage"):
        table.add_column(col, justify="right", overflow="fold")
    for f in fills:
        table.add_row(
            str(f.get("order_id", "")),
            _when(f.get("ts")),
            f"{f.get('side', '')} {_num(f.get('qty'))}",
            _num(f.get("price")),
            _usd(f.get("notional_usd")),
            _usd(f.get("fee_usd")),
            _num(f.get("slippage")),
        )
    return table


def _trade_tables(trades: tuple[dict[str, Any], ...]) -> list[RenderableType]:
    if not trades:
        return [Text("Trade: none opened or closed by this decision", style="dim")]
    out: list[RenderableType] = []
    for t in trades:
        still_open = str(t.get("is_open", "")).lower() == "true"
        exit_ = (
            "still open at the end (marked at the last close)"
            if still_open
            else f"{_when(t.get('exit_ts'))} @ {_num(t.get('exit_price'))}"
        )
        rows: list[tuple[str, str | Text]] = [
            ("This decision", str(t.get("role", ""))),
            ("Position", f"{t.get('direction', '')} {_num(t.get('qty'))}"),
            ("Entry", f"{_when(t.get('entry_ts'))} @ {_num(t.get('entry_price'))}"),
            ("Exit", exit_),
            ("PnL USD", f"{_usd(t.get('pnl_usd'))} ({_float(t.get('return_pct')):+.2f}%)"),
            ("Fees USD", _usd(t.get("fees_usd"))),
            ("Entry reason", str(t.get("entry_reason", ""))),
            ("Exit reason", str(t.get("exit_reason", "")) or "—"),
        ]
        out.append(_fields(f"Trade {t.get('trade_id', '')}", rows))
    return out


def _versions_table(versions: dict[str, str]) -> RenderableType:
    if not versions:
        return Text("Data versions: none recorded in config.json", style="dim")
    return _fields("Data versions (config.json data.pin)", list(versions.items()))
