"""``hflite explain``: the audit trail of one decision, read back from a report folder.

Two steps, kept apart so later sources (LLM reasoning, view scores) add fields to the trail and
panels to the page without touching the lookup: ``load_trail`` reads the folder into a
``DecisionTrail`` (plain data, no terminal), ``render_trail`` turns it into rich renderables and
``trail_html`` into the same blocks as HTML (the report's trails.html). ``TrailSource`` reads a
folder's files once for many trails (``load_trails``). Without a folder, ``find_trail`` searches every
report under report.dir, newest first, and says which one held the id (ids repeat across runs).

A damaged report file (not UTF-8, empty, cut short, a column missing or unreadable) raises
:class:`TrailError` naming the file and what is wrong, never a pandas or JSON exception.

A decision is found by its intent id (``trend-SPY-d12``, verdicts.csv) or by the id of an order it
produced (``trend-SPY-20190103T210000-e1``, or its protective ``...-sl`` / ``...-tp`` children: orders.csv
carries each order's ``decision_id``).

The LLM's explanation (llm_explanations.csv) and the portfolio manager's advice (llm_advice.csv) are
untrusted text: they are shown as plain text, never as rich markup or HTML.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, cached_property
from html import escape
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from rich.console import Group, RenderableType
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from hflite.domain.signal import Check

__all__ = [
    "RULE_BASED",
    "TRAIL_CSS",
    "Block",
    "Column",
    "DecisionTrail",
    "FoundTrail",
    "TrailError",
    "TrailIntent",
    "TrailSource",
    "TrailVerdict",
    "find_trail",
    "latest_report",
    "load_trail",
    "load_trails",
    "report_dir",
    "report_folders",
    "render_trail",
    "suggest_ids",
    "trail_blocks",
    "trail_html",
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
    """No report folder, no decision with that id, or a damaged report file; the message says which
    and what to try instead."""


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

    llm: dict[str, Any] | None = None  # the LLM's explanation (llm_explanations.csv; reasons, risks parsed)
    advice: dict[str, Any] | None = None  # the LLM portfolio manager's answer (llm_advice.csv)
    llm_run: dict[str, Any] | None = None  # the run's LLM summary (llm_summary.json); None: no LLM files


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


def report_folders(root: Path) -> list[Path]:
    """The report folders under ``root`` (folders holding verdicts.csv), the most recently written first."""
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
    return sorted(found, key=lambda p: ((p / _REPORT_MARKER).stat().st_mtime, p.name), reverse=True)


def latest_report(root: Path) -> Path:
    """The most recently written report folder under ``root`` (a folder holding verdicts.csv)."""
    found = report_folders(root)
    if not found:
        raise TrailError(
            f"no report folder under {root}: run `hflite backtest` first, or name one with --report DIR"
        )
    return found[0]


@dataclass(frozen=True)
class FoundTrail:
    """A decision found by searching every report under a folder: its trail, read from the newest report
    that holds it, every report that holds it (newest first) and the damaged reports passed over."""

    trail: DecisionTrail
    folders: tuple[Path, ...]
    skipped: tuple[str, ...] = ()

    @property
    def note(self) -> str:
        """Which report the trail came from, in one line."""
        shown = self.folders[0]
        text = (
            f"found in {shown}"
            if len(self.folders) == 1
            else f"found in {len(self.folders)} reports; showing the newest, {shown}; use --report to choose"
        )
        if self.skipped:
            text += f" (skipped {len(self.skipped)} damaged report(s): {self.skipped[0]})"
        return text


def find_trail(root: Path, ident: str) -> FoundTrail:
    """The trail of ``ident`` (an intent or order id) from the newest report under ``root`` that holds it.

    Report ids repeat across runs (``trend-SPY-d2`` is in every trend run on SPY), so the search says how
    many reports hold it. Only each report's id columns are read; a damaged one is skipped and named."""
    folders = report_folders(root)
    if not folders:
        latest_report(root)  # raises the "no report folder" error
    ident = ident.strip()
    holding: list[Path] = []
    skipped: list[str] = []
    pool: set[str] = set()
    for folder in folders:
        try:
            ids = _ids_of(folder)
        except TrailError as exc:
            skipped.append(str(exc))
            continue
        if ident in ids:
            holding.append(folder)
        pool |= ids
    if not holding:
        ranked = sorted(pool, key=_natural)
        hint = suggest_ids(ident, ranked)
        more = len(suggest_ids(ident, ranked, n=len(ranked))) - len(hint)
        also = f"; ids that share its prefix: {', '.join(hint)}" if hint else ""
        also += f" and {more} more" if more > 0 else ""
        damaged = f"; {len(skipped)} damaged report(s) skipped: {skipped[0]}" if skipped else ""
        raise TrailError(
            f"no decision or order {ident!r} in the {len(folders)} reports under {root}{also}{damaged}. "
            "Name a report with --report DIR"
        )
    return FoundTrail(TrailSource(holding[0]).trail(ident), tuple(holding), tuple(skipped))


def _ids_of(folder: Path) -> set[str]:
    """Every intent id (verdicts.csv) and order id (orders.csv) of a report, read from those columns only."""
    ids: set[str] = set()
    for name, column in ((_REPORT_MARKER, "intent_id"), ("orders.csv", "order_id")):
        path = folder / name
        if not path.is_file():
            continue
        frame = _read_csv(path, dtype=str, keep_default_na=False, usecols=lambda c: c in _ID_COLUMNS)
        if column in frame:
            ids.update(frame[column])
    return ids


_ID_COLUMNS = frozenset({"intent_id", "order_id"})


def load_trail(folder: Path, ident: str) -> DecisionTrail:
    """The trail of the decision ``ident`` (an intent id or an order id) in the report ``folder``."""
    return TrailSource(folder).trail(ident)


def load_trails(folder: Path, idents: Iterable[str]) -> list[DecisionTrail]:
    """The trails of many decisions of one report ``folder``, its files read once (:class:`TrailSource`)."""
    source = TrailSource(folder)
    return [source.trail(ident) for ident in idents]


#: Numeric fields of the LLM tables (llm_explanations.csv, llm_advice.csv).
_LLM_FLOATS = ("confidence", "latency_ms", "scale_asked", "scale_applied", "qty_before", "qty_after")
_LLM_INTS = ("prompt_tokens", "completion_tokens")


class TrailSource:
    """A report folder read once for the trails of many decisions.

    Each file is read on first use and indexed by decision, order and symbol, so a trail costs a few
    lookups rather than a read of every CSV (the report's trails.html holds hundreds). verdicts.csv and
    orders.csv are read up front: they are what an id is looked up in.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        if not (self.folder / _REPORT_MARKER).is_file():
            raise TrailError(f"{self.folder} is not a report folder (no {_REPORT_MARKER} in it)")
        self.verdicts = _read(self.folder, "verdicts.csv", ["ts"])
        _require(self.verdicts, self.folder / _REPORT_MARKER, ("intent_id",))
        self.orders = _read(self.folder, "orders.csv", ["created_ts", "closed_ts"])

    # -- indexes of verdicts.csv and orders.csv --------------------------------------------------
    @cached_property
    def intent_ids(self) -> list[str]:
        """Every intent id of verdicts.csv, in file order."""
        return list(self.verdicts["intent_id"]) if "intent_id" in self.verdicts else []

    @cached_property
    def _verdict_at(self) -> dict[str, int]:
        return _first_positions(self.intent_ids)

    @cached_property
    def _verdict_rows(self) -> list[dict[str, Any]]:
        return _rows(self.verdicts)

    @cached_property
    def _order_ids(self) -> list[str]:
        return list(self.orders["order_id"]) if "order_id" in self.orders else []

    @cached_property
    def _order_at(self) -> dict[str, int]:
        return _first_positions(self._order_ids)

    @cached_property
    def _order_rows(self) -> list[dict[str, Any]]:
        return _rows(self.orders)

    @cached_property
    def _orders_of(self) -> dict[str, list[int]]:
        return _positions(self.orders, "decision_id")

    # -- the other files, read on first use ------------------------------------------------------
    @cached_property
    def fills(self) -> pd.DataFrame:
        return _read(self.folder, "fills.csv", ["ts"])

    @cached_property
    def _fill_rows(self) -> list[dict[str, Any]]:
        return _rows(self.fills)

    @cached_property
    def _fills_of(self) -> dict[str, list[int]]:
        return _positions(self.fills, "order_id")

    @cached_property
    def trades(self) -> pd.DataFrame:
        return _read(self.folder, "trades.csv", ["entry_ts", "exit_ts"])

    @cached_property
    def _trades_of_symbol(self) -> dict[str, list[dict[str, Any]]]:
        rows = _rows(self.trades)
        return {k: [rows[p] for p in pos] for k, pos in _positions(self.trades, "symbol").items()}

    @cached_property
    def _checks(self) -> tuple[list[list[Any]], dict[str, list[int]]] | None:
        path = self.folder / "risk_checks.csv"
        if not path.is_file():
            return None
        frame = _read_csv(path, dtype={"intent_id": str, "name": str})
        _require(frame, path, ("intent_id", "name", "value", "limit", "passed"))
        for col in ("value", "limit"):
            numbers = pd.to_numeric(frame[col], errors="coerce")
            bad = frame[col][numbers.isna() & frame[col].notna()]
            if len(bad):
                where = f"{bad.iloc[0]!r} on line {int(bad.index[0]) + 2}"
                raise _damaged(path, f"column {col}: not a number ({where})")
            frame[col] = numbers
        return [frame[c].tolist() for c in ("name", "value", "limit", "passed")], _positions(
            frame, "intent_id"
        )

    @cached_property
    def meta(self) -> dict[str, Any]:
        """metrics.json (run id, strategy, metrics)."""
        return _json(self.folder / "metrics.json")

    @cached_property
    def config(self) -> dict[str, Any]:
        """config.json (the run's settings)."""
        return _json(self.folder / "config.json")

    @cached_property
    def _ai(self) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, Any]] | None:
        path = self.folder / "ai_decisions.csv"
        if not path.is_file():
            return None
        rows = _read_csv(path)
        ids = [i if isinstance(i, str) else "" for i in rows["intent_id"]] if "intent_id" in rows else []
        summary = _json(self.folder / "ai_summary.json")
        return _rows(rows), _first_positions(ids), summary.get("summary", summary)

    @cached_property
    def llm_run(self) -> dict[str, Any] | None:
        """llm_summary.json (stats, scope, roles), or None when the run wrote no LLM files."""
        path = self.folder / "llm_summary.json"
        return _json(path) if path.is_file() else None

    @cached_property
    def _llm_rows(self) -> _LLMTable:
        return _LLMTable(self.folder / "llm_explanations.csv")

    @cached_property
    def _advice_rows(self) -> _LLMTable:
        return _LLMTable(self.folder / "llm_advice.csv")

    # -- one decision ----------------------------------------------------------------------------
    def trail(self, ident: str) -> DecisionTrail:
        """The trail of the decision ``ident`` (an intent id or an order id)."""
        ident = ident.strip()
        intent_id, matched_by = self._find(ident)
        _require(self.verdicts, self.folder / _REPORT_MARKER, ("ts",))
        row = dict(self._verdict_rows[self._verdict_at[intent_id]])
        mine = [self._order_rows[p] for p in self._orders_of.get(intent_id, [])]
        _fill_legacy(row, mine)
        fills = self._fills_for(mine)
        trades = _trades_of(row, mine, fills, self._trades_of_symbol.get(_str(row.get("symbol")), []))
        checks, notes = self._checks_for(intent_id)
        meta, config = self.meta, self.config
        pins = config.get("data", {}).get("pin", {}) if isinstance(config.get("data"), dict) else {}
        return DecisionTrail(
            folder=self.folder,
            run_id=str(meta.get("run_id") or self.folder.name),
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
            orders=_by_time(mine, "created_ts"),
            fills=_by_time(fills, "ts"),
            trades=trades,
            data_versions={str(k): str(v) for k, v in sorted(pins.items())},
            notes=notes,
            ai=self._ai_for(intent_id),
            llm=self._llm_rows.get(intent_id),
            advice=self._advice_rows.get(intent_id),
            llm_run=self.llm_run,
        )

    def _find(self, ident: str) -> tuple[str, str]:
        """(intent id, how it was found) for an intent id or an order id."""
        if ident in self._verdict_at:
            return ident, "intent id"
        if ident in self._order_at:
            order = self.orders.iloc[self._order_at[ident]]
            decision = str(order.get("decision_id", ""))
            if decision in self._verdict_at:
                return decision, f"order {ident}"
            raise TrailError(
                f"order {ident} in {self.folder} names no recorded decision (decision_id {decision!r})"
            )
        pool = [*self.intent_ids, *self._order_ids]
        hint = suggest_ids(ident, pool)
        more = len(suggest_ids(ident, pool, n=len(pool))) - len(hint)
        also = f"; ids that share its prefix: {', '.join(hint)}" if hint else ""
        also += f" and {more} more" if more > 0 else ""
        raise TrailError(
            f"no decision or order {ident!r} in {self.folder} ({len(self.intent_ids)} decisions, "
            f"{len(self._order_ids)} orders){also}. Intent ids are in verdicts.csv, order ids in orders.csv"
        )

    def _fills_for(self, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The fills of ``orders``, in file order."""
        ids = dict.fromkeys(str(o.get("order_id", "")) for o in orders)
        pos = sorted(p for i in ids for p in self._fills_of.get(i, []))
        return [self._fill_rows[p] for p in pos]

    def _checks_for(self, intent_id: str) -> tuple[tuple[Check, ...], tuple[str, ...]]:
        if self._checks is None:
            return (), (f"{self.folder.name} predates the audit trail: it has no risk_checks.csv",)
        (name, value, limit, passed), index = self._checks
        checks = tuple(
            Check(str(name[p]), float(value[p]), float(limit[p]), str(passed[p]).lower() == "true")
            for p in index.get(intent_id, [])
        )
        return checks, ()

    def _ai_for(self, intent_id: str) -> dict[str, Any] | None:
        """The AI brain's row behind an intent, with the run's model and feature summary."""
        if self._ai is None:
            return None
        rows, at, summary = self._ai
        if intent_id not in at:
            return None
        out: dict[str, Any] = dict(rows[at[intent_id]])
        out["summary"] = summary if isinstance(summary, dict) else {}
        for key in [k for k in out if k.endswith("_reasons")]:
            try:
                out[key] = json.loads(out[key]) if isinstance(out[key], str) else []
            except json.JSONDecodeError:
                out[key] = []
        return out


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as plain dicts (column name -> Python value), built column-wise once: far
    cheaper than pandas row access per decision."""
    names = [str(c) for c in frame.columns]
    columns = [frame[c].tolist() for c in frame.columns]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)] if names else []


def _positions(frame: pd.DataFrame, column: str) -> dict[str, list[int]]:
    """Row positions per value of ``column`` (file order); {} when the column is missing."""
    if column not in frame or frame.empty:
        return {}
    codes, uniques = pd.factorize(frame[column])  # missing values get code -1 and no group
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(-1, len(uniques) + 1)).tolist()
    pos = order.tolist()
    return {str(key): pos[bounds[k + 1] : bounds[k + 2]] for k, key in enumerate(uniques)}


def _by_time(rows: list[dict[str, Any]], column: str) -> tuple[dict[str, Any], ...]:
    """Copies of ``rows`` in time order (stable; missing times last), as ``DataFrame.sort_values``."""

    def key(row: dict[str, Any]) -> tuple[int, int]:
        ts = row.get(column)
        return (1, 0) if ts is None or ts is pd.NaT else (0, pd.Timestamp(ts).value)

    return tuple(dict(r) for r in sorted(rows, key=key))


def _first_positions(ids: list[str]) -> dict[str, int]:
    """Each id's first position in ``ids``."""
    out: dict[str, int] = {}
    for pos, ident in enumerate(ids):
        out.setdefault(ident, pos)
    return out


class _LLMTable:
    """llm_explanations.csv or llm_advice.csv by intent id (the first row of each), each row typed when
    asked for (:func:`_llm_record`); empty when the file is missing."""

    def __init__(self, path: Path) -> None:
        frame = _read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else pd.DataFrame()
        self._rows = _rows(frame) if "intent_id" in frame else []
        self._at = _first_positions([str(r["intent_id"]) for r in self._rows])

    def get(self, intent_id: str) -> dict[str, Any] | None:
        pos = self._at.get(intent_id)
        return None if pos is None else _llm_record(self._rows[pos])


def _llm_record(rec: dict[str, Any]) -> dict[str, Any]:
    """A row of an LLM table, typed: reasons and risks as lists of str, numbers as float/int,
    ``record_id`` int or None, ``before_cutoff`` bool, ``ts`` a Timestamp; the rest as str."""
    row: dict[str, Any] = {str(k): _str(v) for k, v in rec.items()}
    for key in ("reasons", "risks"):
        row[key] = _text_list(row.get(key))
    for key in _LLM_FLOATS:
        if key in row:
            row[key] = _float(row[key])
    for key in _LLM_INTS:
        if key in row:
            row[key] = int(_float(row[key], 0.0))
    record = _float(row.get("record_id"))
    row["record_id"] = None if math.isnan(record) else int(record)
    row["before_cutoff"] = str(row.get("before_cutoff", "")).strip().lower() in ("true", "1")
    row["ts"] = pd.Timestamp(row["ts"]) if row.get("ts") else None
    return row


def _text_list(value: Any) -> list[str]:
    """A JSON list of strings (as written by the LLM passes); anything else -> []."""
    try:
        parsed = json.loads(value) if isinstance(value, str) and value else []
    except ValueError:
        return []
    return [str(x) for x in parsed] if isinstance(parsed, list) else []


def _read(folder: Path, name: str, ts_columns: list[str]) -> pd.DataFrame:
    """A report CSV as text columns with ``ts_columns`` parsed; empty when the file is missing."""
    path = folder / name
    if not path.is_file():
        return pd.DataFrame()
    frame = _read_csv(path, dtype=str, keep_default_na=False)
    for col in ts_columns:
        if col in frame:
            text = frame[col].where(frame[col] != "")
            try:
                frame[col] = pd.to_datetime(text, utc=True, format="ISO8601")
            except (ValueError, TypeError):
                bad = text[text.notna() & pd.to_datetime(text, utc=True, errors="coerce").isna()]
                where = f"{bad.iloc[0]!r} on line {int(bad.index[0]) + 2}" if len(bad) else "unreadable"
                raise _damaged(path, f"column {col}: not a time ({where})") from None
    return frame


def _damaged(path: Path, what: str) -> TrailError:
    return TrailError(f"damaged report file {path}: {what}")


def _report_text(path: Path) -> str:
    """A report file's text; a file that is unreadable, not UTF-8 or empty raises :class:`TrailError`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _damaged(path, f"unreadable ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _damaged(path, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    if not text.strip():
        raise _damaged(path, "empty (not even a header row)" if path.suffix == ".csv" else "empty")
    return text


def _read_csv(path: Path, **options: Any) -> pd.DataFrame:
    """``pd.read_csv`` of a report file; a damaged file raises :class:`TrailError` naming it and what is
    wrong (not UTF-8, empty, not CSV)."""
    try:
        return pd.read_csv(io.StringIO(_report_text(path)), **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _damaged(path, f"not a valid CSV ({first})") from None


def _require(frame: pd.DataFrame, path: Path, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise _damaged(path, f"no {', '.join(missing)} column{'s' if len(missing) > 1 else ''}")


def _fill_legacy(row: dict[str, Any], orders: list[dict[str, Any]]) -> None:
    """Reports written before the audit trail have no kind or side: infer them from the verdict's
    reason (exits are always "exit: ...") and the decision's own order."""
    if not _str(row.get("kind")):
        row["kind"] = "exit" if _str(row.get("reason")).startswith("exit:") else "entry"
    if not _str(row.get("side")) and orders:
        main = [o for o in orders if o.get("parent_id", "") == ""]
        row["side"] = str(main[0].get("side", "")) if main else ""


def _json(path: Path) -> dict[str, Any]:
    """A report's JSON object; {} when the file is missing, :class:`TrailError` when it is damaged."""
    if not path.is_file():
        return {}
    try:
        payload = json.loads(_report_text(path))
    except json.JSONDecodeError as exc:
        raise _damaged(path, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(payload, dict):
        raise _damaged(path, "not a JSON object")
    return payload


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


def _trades_of(
    row: dict[str, Any],
    orders: list[dict[str, Any]],
    fills: list[dict[str, Any]],
    trades: list[dict[str, Any]],
) -> tuple[dict[str, Any], ...]:
    """The trades this decision opened (its entry order's fills) or closed (its exit order's fills, or
    a protective child's), matched on symbol, direction and fill time. Each gains ``role``, e.g.
    "opened; closed by trend-SPY-20190103T210000-e1-sl"."""
    if not trades or not fills or not orders:
        return ()
    symbol, side, kind = _str(row.get("symbol")), _str(row.get("side")), _str(row.get("kind"))
    children = {o.get("order_id") for o in orders if o.get("parent_id", "") != ""}
    mine = [t for t in trades if t.get("symbol") == symbol]
    roles: dict[str, list[str]] = {}
    found: dict[str, dict[str, Any]] = {}
    for f in fills:
        order_id = f.get("order_id")
        if kind == "entry" and order_id not in children:
            direction, col, role = ("long" if side == "buy" else "short"), "entry_ts", "opened"
        else:
            direction, col = ("short" if f.get("side") == "buy" else "long"), "exit_ts"
            role = f"closed by {order_id}" if order_id in children else "closed"
        for t in mine:
            if t.get(col) == f.get("ts") and t.get("direction") == direction:
                found.setdefault(t["trade_id"], t)
                if role not in roles.setdefault(t["trade_id"], []):
                    roles[t["trade_id"]].append(role)
    return tuple({"role": "; ".join(roles[tid]), **t} for tid, t in found.items())


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
_STANCE_STYLE = {"bullish": "bold green", "bearish": "bold red", "neutral": "bold"}
_ACTION_STYLE = {"approve": "bold green", "scale": "bold yellow", "veto": "bold red"}
_SOURCES = {
    "live": "live (the model answered during this run)",
    "replay": "replayed (a recorded reply of the model)",
}
_SCOPES = {
    "orders": "only decisions that sent an order",
    "entries": "only entries that sent an order",
}
RULE_BASED = "rule-based (no LLM explanation recorded for this decision)"

Cell = str | Text


@dataclass(frozen=True)
class Column:
    """A column of a :class:`Block` table. Columns that do not wrap clip; the others fold."""

    header: str
    justify: Literal["left", "right"] = "left"
    no_wrap: bool = False
    style: str = ""


@dataclass(frozen=True)
class Block:
    """One part of a rendered trail, drawn the same way in a terminal (:func:`render_trail`) and in HTML
    (:func:`trail_html`): a rule (``rule``), a line of text (``line``), a name/value block (``rows`` of
    pairs, no ``columns``) or a table (``columns``). A ``str`` cell is rich markup in the terminal; text
    from outside (LLM replies) goes in a ``Text`` cell, shown as it is."""

    title: str = ""
    rows: tuple[tuple[Cell, ...], ...] = ()
    columns: tuple[Column, ...] = ()
    caption: str = ""
    title_style: str | None = "bold"  # None: rich's default table title style
    line: Text | None = None
    rule: bool = False


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


def trail_blocks(trail: DecisionTrail) -> list[Block]:
    """The trail as blocks: intent, verdict, the AI's views, the LLM's explanation and advice, every
    check, orders, fills, trade, data versions and notes."""
    blocks = [
        Block(f"Decision {trail.intent.id}", rule=True),
        _intent_table(trail),
        _verdict_table(trail.verdict),
        *_ai_tables(trail.ai),
        *_llm_blocks(trail),
        _checks_table(trail),
        _orders_table(trail.orders),
        _fills_table(trail.fills),
        *_trade_tables(trail.trades),
        _versions_table(trail.data_versions),
    ]
    blocks += [_line(f"note: {n}", "yellow") for n in trail.notes]
    return blocks


def render_trail(trail: DecisionTrail) -> Group:
    """The trail as rich renderables: intent, verdict, the AI's views, the LLM's explanation and advice,
    every check, orders, fills, trade, data versions."""
    return Group(*(_rich(b) for b in trail_blocks(trail)))


def _line(text: str, style: str = "") -> Block:
    return Block(line=Text(text, style=style))


def _rich(block: Block) -> RenderableType:
    if block.rule:
        return Rule(block.title, align="left")
    if block.line is not None:
        return block.line
    if not block.columns:
        return _fields(block.title, [(str(r[0]), r[1]) for r in block.rows])
    table = Table(
        title=block.title,
        title_justify="left",
        title_style=block.title_style,
        caption=block.caption or None,
        caption_justify="left",
    )
    for c in block.columns:
        overflow: Literal["ellipsis", "fold"] = "ellipsis" if c.no_wrap else "fold"
        table.add_column(
            c.header, justify=c.justify, no_wrap=c.no_wrap, overflow=overflow, style=c.style or None
        )
    for row in block.rows:
        table.add_row(*row)
    return table


# -- HTML ---------------------------------------------------------------------------------------

#: Styles of :func:`trail_html`'s elements, for a page that holds trails.
TRAIL_CSS = """
.trail{margin:0 0 18px}
.trail h3.rule{font-size:15px;color:#1f2328;border-bottom:2px solid #1a7f37;padding-bottom:3px;margin:6px 0}
.trail table{margin:2px 0 10px}
.trail caption{text-align:left;font-weight:600;padding:4px 0;color:#1f2328}
.trail caption.plain{font-weight:400;font-style:italic}
.trail td,.trail th{text-align:left;white-space:normal;vertical-align:top}
.trail td.r,.trail th.r{text-align:right}
.trail td.nw,.trail th.nw{white-space:nowrap}
.trail table.fields th{background:none;white-space:nowrap}
.trail p{margin:4px 0}
"""
_CSS_WORDS = {
    "bold": "font-weight:600",
    "italic": "font-style:italic",
    "dim": "color:#6e7781",
    "green": "color:#1a7f37",
    "red": "color:#cf222e",
    "yellow": "color:#9a6700",
}


def trail_html(trail: DecisionTrail) -> str:
    """The trail's blocks as an HTML fragment (every text escaped), styled by :data:`TRAIL_CSS`."""
    return "".join(_html(b) for b in trail_blocks(trail))


@cache
def _css(style: str) -> str:
    return ";".join(_CSS_WORDS[w] for w in style.split() if w in _CSS_WORDS)


def _cell(value: Cell) -> str:
    if isinstance(value, Text):
        text, css = value.plain, _css(str(value.style or ""))
    else:
        text, css = value, ""
    html = escape(text)
    if "\n" in html:
        html = html.replace("\n", "<br>")
    return f'<span style="{css}">{html}</span>' if css else html


def _klass(c: Column) -> str:
    names = " ".join(n for n, on in (("r", c.justify == "right"), ("nw", c.no_wrap)) if on)
    return f' class="{names}"' if names else ""


def _html(block: Block) -> str:
    if block.rule:
        return f'<h3 class="rule">{escape(block.title)}</h3>'
    if block.line is not None:
        return f"<p>{_cell(block.line)}</p>"
    plain = ' class="plain"' if block.title_style is None else ""
    caption = f"<caption{plain}>{escape(block.title)}</caption>" if block.title else ""
    if not block.columns:
        body = "".join(f"<tr><th>{_cell(r[0])}</th><td>{_cell(r[1])}</td></tr>" for r in block.rows)
        return f'<table class="fields">{caption}<tbody>{body}</tbody></table>'
    klass = [_klass(c) for c in block.columns]
    head = "".join(f"<th{k}>{escape(c.header)}</th>" for k, c in zip(klass, block.columns, strict=True))
    body = "".join(
        "<tr>" + "".join(f"<td{k}>{_cell(v)}</td>" for k, v in zip(klass, row, strict=False)) + "</tr>"
        for row in block.rows
    )
    note = f'<p class="note">{escape(block.caption)}</p>' if block.caption else ""
    return (
        f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>{note}"
    )


# -- the blocks ---------------------------------------------------------------------------------


def _ai_tables(ai: dict[str, Any] | None) -> list[Block]:
    """The AI brain's decision: ensemble, the three views with their top reasons, the model."""
    if ai is None:
        return []
    summary = ai.get("summary") or {}
    head = Block(
        "AI ensemble",
        (
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
        ),
    )
    rows = []
    for v in ("banker", "investor", "market", "technical"):
        if v not in ai:
            continue
        reasons = ai.get(f"{v}_reasons") or []
        text = "; ".join(f"{r[0]} = {_num(r[1])} ({float(r[2]):+.3f})" for r in reasons) or "no known inputs"
        rows.append((v, f"{_float(ai.get(v)):+.3f}", f"{_float(ai.get(f'{v}_conf')):.2f}", text))
    views = Block(
        "Views (top reasons: factor, value, contribution)",
        tuple(rows),
        columns=tuple(Column(c) for c in ("view", "score", "confidence", "reasons")),
        title_style=None,
    )
    return [head, views]


def _llm_blocks(trail: DecisionTrail) -> list[Block]:
    """The LLM's explanation (or the rule-based one, and why) and the portfolio manager's advice."""
    out = [_explanation_block(trail), *_cutoff_note(trail, trail.llm)]
    if trail.advice is not None:
        out += [_advice_block(trail, trail.advice), *_cutoff_note(trail, trail.advice)]
    return out


def _bullets(items: Any, none: str = "none named") -> Cell:
    lines = [str(x) for x in items] if isinstance(items, list | tuple) else []
    return Text("\n".join(f"- {x}" for x in lines)) if lines else none


def _ratio(value: Any) -> str:
    x = _float(value)
    return "—" if math.isnan(x) else f"{x:.2f}"


def _stance(stance: str, confidence: Any) -> Text:
    return Text(f"{stance or '—'} (confidence {_ratio(confidence)})", style=_STANCE_STYLE.get(stance, "bold"))


def _explanation_block(trail: DecisionTrail) -> Block:
    row = trail.llm
    if row is None:
        return _rule_based_block(trail)
    rows: list[tuple[Cell, Cell]] = [
        ("Stance", _stance(_str(row.get("stance")), row.get("confidence"))),
        ("Reasons", _bullets(row.get("reasons"), "none given")),
        ("Risks", _bullets(row.get("risks"))),
        *_provenance(trail, row),
    ]
    return Block("LLM explanation", tuple(rows))


def _provenance(trail: DecisionTrail, row: dict[str, Any]) -> list[tuple[Cell, Cell]]:
    """Where an LLM answer came from: source, backend, model, prompt hash, journal record, as-of time,
    latency and tokens."""
    source, why = _str(row.get("source")), _str(row.get("why"))
    if source == "fallback":
        label = Text(f"rule-based fallback ({why or 'reason not recorded'})", style="yellow")
    else:
        label = Text(_SOURCES.get(source, source or "not recorded"))
    record = row.get("record_id")
    return [
        ("Source", label),
        ("Backend", Text(_str(row.get("backend")) or "—")),
        ("Model", Text(_str(row.get("model")) or "—")),
        ("Prompt hash", Text(_str(row.get("prompt_hash"))[:12] or "—")),
        (
            "Journal record",
            str(record) if record is not None else "— (none: not a call recorded in this run)",
        ),
        ("As of", f"{_when(trail.intent.ts)} (the decision's time: the prompt held nothing later)"),
        ("Latency", f"{_float(row.get('latency_ms'), 0.0):,.0f} ms"),
        (
            "Tokens",
            f"{int(_float(row.get('prompt_tokens'), 0.0)):,} prompt + "
            f"{int(_float(row.get('completion_tokens'), 0.0)):,} completion",
        ),
    ]


def _cutoff_note(trail: DecisionTrail, row: dict[str, Any] | None) -> list[Block]:
    """A yellow note when the answer is about a date before the model's training cutoff."""
    if row is None or not row.get("before_cutoff"):
        return []
    stats = (trail.llm_run or {}).get("stats") or {}
    cutoff = _str(stats.get("training_cutoff")) if isinstance(stats, dict) else ""
    model = _str(row.get("model")) or "the model"
    when = f"{pd.Timestamp(trail.intent.ts):%Y-%m-%d}"
    return [
        Block(
            line=Text(
                f"note: this answer is about {when}, before {model}'s training cutoff"
                f"{f' {cutoff}' if cutoff else ''}: the model may know what happened next",
                style="yellow",
            )
        )
    ]


def _verdict_row(trail: DecisionTrail) -> dict[str, Any]:
    """The trail as a verdicts.csv row (what ``facts_from_rows`` reads)."""
    it, v = trail.intent, trail.verdict
    return {
        "intent_id": it.id,
        "ts": it.ts,
        "symbol": it.symbol,
        "kind": it.kind,
        "side": it.side,
        "price": it.price,
        "intent_reason": it.reason,
        "status": v.status,
        "qty_requested": v.qty_requested,
        "qty_approved": v.qty_approved,
        "reason": v.reason,
        "rules": list(v.rules),
        "values": dict(it.values),
    }


def _why_no_llm(trail: DecisionTrail) -> str:
    run = trail.llm_run
    if run is None:
        return "the run had no LLM ([llm] off, or no role on): its report has no llm_explanations.csv"
    roles = run.get("roles") if isinstance(run.get("roles"), dict) else {}
    if roles and not roles.get("explain", False):
        return "the run's explain role was off ([llm] explain = false)"
    scope = _str(run.get("scope"))
    if scope in _SCOPES:
        return f"outside the run's explain scope ({scope}: {_SCOPES[scope]})"
    return "llm_explanations.csv has no row for it"


def _rule_based_block(trail: DecisionTrail) -> Block:
    """No LLM row: the rule-based explanation, computed now from the trail's own facts."""
    from hflite.ai.llm.roles import facts_from_rows, rule_explanation

    try:
        e = rule_explanation(facts_from_rows(_verdict_row(trail), trail.ai))
    except (ValueError, TypeError, KeyError) as exc:  # pydantic's ValidationError is a ValueError
        return _line(f"LLM explanation: none, and no rule-based one ({exc})", "dim")
    rows: list[tuple[Cell, Cell]] = [
        ("Stance", _stance(e.stance, e.confidence)),
        ("Reasons", _bullets(e.reasons, "none given")),
        ("Risks", _bullets(e.risks)),
        ("Source", Text(RULE_BASED, style="dim")),
        ("Why", Text(_why_no_llm(trail))),  # Text: "[llm]" is not rich markup
    ]
    return Block("LLM explanation", tuple(rows))


def _advice_block(trail: DecisionTrail, row: dict[str, Any]) -> Block:
    action = _str(row.get("action"))
    before, after = _float(row.get("qty_before")), _float(row.get("qty_after"))
    size = f"{_num(before)} -> {_num(after)}"
    if before > 0 and after != before:
        size += f" (kept {after / before:.1%})"
    rows: list[tuple[Cell, Cell]] = [
        ("Action", Text((action or "—").upper(), style=_ACTION_STYLE.get(action, "bold"))),
        ("Scale", f"asked x{_ratio(row.get('scale_asked'))}, applied x{_ratio(row.get('scale_applied'))}"),
        ("Quantity", size),
        ("Confidence", _ratio(row.get("confidence"))),
        ("Reasons", _bullets(row.get("reasons"), "none given")),
        ("Risks", _bullets(row.get("risks"))),
        *_provenance(trail, row),
    ]
    return Block("LLM portfolio manager", tuple(rows))


def _intent_table(trail: DecisionTrail) -> Block:
    it = trail.intent
    price = _num(it.price) + (f" (x {_num(it.fx)} = {_num(it.price * it.fx)} USD)" if it.fx != 1.0 else "")
    rows: list[tuple[Cell, Cell]] = [
        ("Run", f"{trail.run_id} ({trail.strategy}), {trail.folder}"),
        ("Found by", trail.matched_by),
        ("Time", _when(it.ts)),
        ("Symbol", it.symbol),
        ("Intent", f"{it.kind} {it.side}".strip()),
        ("Strategy reason", Text(it.reason)),  # Text: a reason may hold "[x]"
        ("Price", price),
        ("ATR", _num(it.atr)),
    ]
    rows += [(f"  {name}", _num(v)) for name, v in it.values.items() if name != "atr"]
    return Block("Intent", tuple(rows))


def _verdict_table(v: TrailVerdict) -> Block:
    status = Text(v.status.upper(), style=f"bold {_STATUS_STYLE.get(v.status, 'white')}")
    size = f"{_num(v.qty_requested)} -> {_num(v.qty_approved)}"
    if v.qty_requested > 0 and v.qty_approved != v.qty_requested:
        size += f" (kept {v.qty_approved / v.qty_requested:.1%})"
    rows: list[tuple[Cell, Cell]] = [
        ("Status", status),
        ("Requested -> approved", size),
        ("Reason", Text(v.reason)),
        ("Rules", ", ".join(v.rules) or "none (nothing rejected or cut it)"),
    ]
    return Block("Risk verdict", tuple(rows))


def _checks_table(trail: DecisionTrail) -> Block:
    checks = trail.verdict.checks
    if not checks:
        why = (
            "exits are always allowed: the gate runs no checks on them"
            if trail.intent.kind == "exit"
            else "none was measured before the gate rejected it"
        )
        return _line(f"Risk checks: none ({why})", "dim")
    rows = []
    for c in checks:
        result = Text("pass", style="green") if c.passed else Text("FAIL", style="bold red")
        meaning = CHECK_MEANINGS.get(c.name.split(":", 1)[0], "")
        rows.append((c.name, _num(c.value), _num(c.limit), result, meaning))
    return Block(
        f"Risk checks ({len(checks)}, in the order the gate ran them)",
        tuple(rows),
        columns=(
            Column("Check", no_wrap=True),
            Column("Value", justify="right", no_wrap=True),
            Column("Limit", justify="right", no_wrap=True),
            Column("Result", no_wrap=True),
            Column("Measures", style="dim"),
        ),
        caption="Caps record the size before that cap acted. A failed cap or scale check cut the order; "
        "a failed gate rejected it. Gates that are states rather than measures (kill, pause, "
        "breakers, protections, shorting) show in the verdict's rules and reason.",
    )


def _orders_table(orders: tuple[dict[str, Any], ...]) -> Block:
    if not orders:
        return _line("Orders: none (nothing was approved)", "dim")
    rows = []
    for o in orders:
        what = f"{o.get('type', '')} {o.get('side', '')} {_num(o.get('qty'))}"
        if o.get("price"):
            what += f" @ {_num(o.get('price'))}"
        if o.get("parent_id"):
            what += f" ({o.get('reason', '')})"
        filled = _num(o.get("filled_qty"))
        if o.get("avg_fill_price"):
            filled += f" @ {_num(o.get('avg_fill_price'))}"
        rows.append(
            (
                str(o.get("order_id", "")),
                Text(what),
                str(o.get("status", "")),
                filled,
                _when(o.get("created_ts")),
                _when(o.get("closed_ts")),
            )
        )
    columns = (
        Column("Order", no_wrap=True),
        *(Column(c) for c in ("What", "Status", "Filled", "Created", "Closed")),
    )
    return Block("Orders", tuple(rows), columns=columns)


def _fills_table(fills: tuple[dict[str, Any], ...]) -> Block:
    if not fills:
        return _line("Fills: none", "dim")
    rows = [
        (
            str(f.get("order_id", "")),
            _when(f.get("ts")),
            f"{f.get('side', '')} {_num(f.get('qty'))}",
            _num(f.get("price")),
            _usd(f.get("notional_usd")),
            _usd(f.get("fee_usd")),
            _num(f.get("slippage")),
        )
        for f in fills
    ]
    columns = (
        Column("Order", no_wrap=True),
        Column("Time"),
        *(Column(c, justify="right") for c in ("Side qty", "Price", "Notional USD", "Fee USD", "Slippage")),
    )
    return Block("Fills", tuple(rows), columns=columns)


def _trade_tables(trades: tuple[dict[str, Any], ...]) -> list[Block]:
    if not trades:
        return [_line("Trade: none opened or closed by this decision", "dim")]
    out: list[Block] = []
    for t in trades:
        still_open = str(t.get("is_open", "")).lower() == "true"
        exit_ = (
            "still open at the end (marked at the last close)"
            if still_open
            else f"{_when(t.get('exit_ts'))} @ {_num(t.get('exit_price'))}"
        )
        rows: list[tuple[Cell, Cell]] = [
            ("This decision", str(t.get("role", ""))),
            ("Position", f"{t.get('direction', '')} {_num(t.get('qty'))}"),
            ("Entry", f"{_when(t.get('entry_ts'))} @ {_num(t.get('entry_price'))}"),
            ("Exit", exit_),
            ("PnL USD", f"{_usd(t.get('pnl_usd'))} ({_float(t.get('return_pct')):+.2f}%)"),
            ("Fees USD", _usd(t.get("fees_usd"))),
            ("Entry reason", Text(str(t.get("entry_reason", "")))),
            ("Exit reason", Text(str(t.get("exit_reason", "")) or "—")),
        ]
        out.append(Block(f"Trade {t.get('trade_id', '')}", tuple(rows)))
    return out


def _versions_table(versions: dict[str, str]) -> Block:
    if not versions:
        return _line("Data versions: none recorded in config.json", "dim")
    return Block("Data versions (config.json data.pin)", tuple(versions.items()))
