"""Execution quality: what each fill cost against the price the strategy decided on, and how long it
took (``hflite execution report``).

The engine stamps every order with the decision bar's close, the last price it knew when it handed
the order to the venue (arrival) and the wall-clock times of both; the journal keeps them with each
fill (``domain.order.FillRecord``), together with when the fill was applied. This module reads them
back as one row per fill and measures:

- **slippage in bps**, positive = a cost to us: ``side * (fill - benchmark) / benchmark * 1e4``, against
  the decision price and against the arrival price. For a stop or limit order the price the strategy
  decided on is its trigger or limit when it filled (after any trailing), so both benchmarks are that
  price there: a stop's slippage is how far through its trigger it filled, a limit's is <= 0.
- **fees in bps** of the fill's notional.
- **latency**: decision -> send and decision -> applied on our wall clock; send -> fill on the venue's
  execution time when that is on the wall clock too (it lies between the send and our booking of it,
  within ``SKEW_NS``); a recorded replay or a driven clock executes at bar-times, so there only
  ``fill_delay_h`` (fill bar-time - decision bar-time) measures the delay.

Grouped by venue, symbol, order type and hour of the execution (UTC and the exchange's local time),
as terminal tables and a self-contained HTML page with plotly plots.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from hflite.domain.instrument import Calendar, UnknownInstrumentError, instrument_for

#: How far apart two clocks (ours and the venue's) may be for the venue's execution time to count as
#: wall-clock time: a fill executes after its order was sent and before we book it, give or take this.
SKEW_NS = 5 * 10**9

#: Columns of ``load_fills`` (one row per fill of one of our orders).
FILL_COLUMNS = [
    "venue",
    "order_id",
    "symbol",
    "side",
    "order_type",
    "reason",
    "order_qty",
    "qty",
    "price",
    "fee",
    "notional",
    "ts",
    "bar_ts",
    "decision_ts",
    "decision_close",
    "decision_price",
    "arrival_price",
    "limit_price",
    "decided_ns",
    "sent_ns",
    "applied_ns",
    "slip_decision_bps",
    "slip_arrival_bps",
    "fee_bps",
    "decide_to_send_ms",
    "send_to_fill_ms",
    "decide_to_applied_ms",
    "fill_delay_h",
    "hour_utc",
    "hour_local",
    "timezone",
]

#: The exchange's local time zone per calendar (the FX day rolls at 17:00 New York time).
_ZONES = {Calendar.XNYS: "America/New_York", Calendar.FX: "America/New_York", Calendar.ALWAYS: "UTC"}

#: The groupings of the report: (title, column).
GROUPS = (
    ("venue", "venue"),
    ("symbol", "symbol"),
    ("order type", "order_type"),
    ("hour (UTC)", "hour_utc"),
    ("hour (exchange local)", "hour_local"),
)


class QualityError(Exception):
    """The journal cannot be read for execution quality; one line that names it."""


def slippage_bps(side: int, fill_price: float, benchmark: float) -> float:
    """The cost of filling at ``fill_price`` against ``benchmark`` in basis points of the benchmark,
    positive when it cost us (a buy above it, a sell below it); NaN without a benchmark."""
    if not benchmark > 0.0:
        return math.nan
    return side * (fill_price - benchmark) / benchmark * 1e4


def fee_bps(fee: float, qty: float, price: float) -> float:
    """A fee in basis points of the fill's notional (both in the quote currency)."""
    notional = abs(qty) * price
    return fee / notional * 1e4 if notional > 0.0 else math.nan


def _zone(symbol: str) -> str:
    try:
        return _ZONES.get(instrument_for(symbol).calendar, "UTC")
    except UnknownInstrumentError:
        return "UTC"


def _venue(db: sqlite3.Connection) -> str:
    row = db.execute("SELECT value FROM meta WHERE key = 'book'").fetchone()
    if row is not None:
        try:
            return str(json.loads(row[0]).get("venue") or "?")
        except (ValueError, AttributeError):
            return "?"
    return "?"


def _read(path: Path) -> tuple[str, list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(venue, fill bodies, order bodies) of a journal, read-only."""
    if not path.is_file():
        raise QualityError(f"no journal at {path}")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as exc:
        raise QualityError(f"{path}: cannot open ({exc})") from None
    try:
        fills = [
            json.loads(b) for (b,) in db.execute("SELECT body FROM events WHERE kind = 'fill' ORDER BY seq")
        ]
        orders = {oid: json.loads(b) for oid, b in db.execute("SELECT id, body FROM orders")}
        venue = _venue(db)
    except sqlite3.DatabaseError as exc:
        raise QualityError(f"{path} is not an hflite journal ({exc})") from None
    finally:
        db.close()
    return venue, fills, orders


def load_fills(journal: str | Path) -> pd.DataFrame:
    """Every fill of one of our orders in a journal, with its slippage, fees and latency
    (``FILL_COLUMNS``). A fill journaled twice (a step re-run after a crash) counts once; book
    adjustments a human accepted are not fills of an order and are left out. Journals written before
    fills carried their stamps give NaN where a stamp is missing."""
    path = Path(journal)
    venue, fills, orders = _read(path)
    rows: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for f in fills:
        order = orders.get(f["order_id"])
        if order is None:
            continue
        key = (f["order_id"], f["ts"], f["qty"], f["price"])
        if key in seen:
            continue
        seen.add(key)
        rows.append(_row(venue, f, order))
    frame = pd.DataFrame(rows, columns=FILL_COLUMNS)
    for col in ("decided_ns", "sent_ns", "applied_ns", "ts", "bar_ts", "decision_ts"):
        frame[col] = frame[col].astype("Int64")
    return frame


def _row(venue: str, f: dict[str, Any], order: dict[str, Any]) -> dict[str, Any]:
    side = 1 if f["side"] == "buy" else -1
    otype = str(f.get("order_type") or order.get("type") or "market")
    limit = f.get("limit_price", order.get("price"))
    close = _num(f.get("decision_price", order.get("decision_price")))
    arrival = _num(f.get("arrival_price", order.get("arrival_price")))
    if otype != "market" and limit:  # the trigger or limit is the price decided on
        decision = arrival = float(limit)
    else:
        decision = close
    price, qty, fee = float(f["price"]), float(f["qty"]), float(f["fee"])
    ts = int(f["ts"])
    decision_ts = int(f.get("decision_ts") or order.get("created_ts") or 0) or None
    bar_ts = f.get("bar_ts")
    decided, sent, applied = (_stamp(f.get(k, order.get(k))) for k in ("decided_ns", "sent_ns", "applied_ns"))
    on_wall = sent is not None and applied is not None and sent - SKEW_NS <= ts <= applied + SKEW_NS
    zone = _zone(str(f["symbol"]))
    when = pd.Timestamp(ts, unit="ns", tz="UTC")
    return {
        "venue": venue,
        "order_id": f["order_id"],
        "symbol": f["symbol"],
        "side": f["side"],
        "order_type": otype,
        "reason": order.get("reason", ""),
        "order_qty": float(order.get("qty") or 0.0),
        "qty": qty,
        "price": price,
        "fee": fee,
        "notional": qty * price,
        "ts": ts,
        "bar_ts": int(bar_ts) if bar_ts is not None else None,
        "decision_ts": decision_ts,
        "decision_close": close,
        "decision_price": decision,
        "arrival_price": arrival,
        "limit_price": float(limit) if limit else math.nan,
        "decided_ns": decided,
        "sent_ns": sent,
        "applied_ns": applied,
        "slip_decision_bps": slippage_bps(side, price, decision),
        "slip_arrival_bps": slippage_bps(side, price, arrival),
        "fee_bps": fee_bps(fee, qty, price),
        "decide_to_send_ms": _ms(decided, sent),
        "send_to_fill_ms": _ms(sent, ts) if on_wall else math.nan,
        "decide_to_applied_ms": _ms(decided, applied),
        "fill_delay_h": (int(bar_ts) - decision_ts) / 3.6e12
        if bar_ts is not None and decision_ts
        else math.nan,
        "hour_utc": when.hour,
        "hour_local": when.tz_convert(ZoneInfo(zone)).hour,
        "timezone": zone,
    }


def _num(value: Any) -> float:
    return float(value) if value else math.nan


def _stamp(value: Any) -> int | None:
    return int(value) if value else None


def _ms(a: int | None, b: int | None) -> float:
    return (b - a) / 1e6 if a is not None and b is not None else math.nan


#: Columns of each grouped table.
SUMMARY_COLUMNS = [
    "fills",
    "notional",
    "slip_decision_bps",
    "slip_decision_bps_median",
    "slip_arrival_bps",
    "fee_bps",
    "decide_to_send_ms_p50",
    "send_to_fill_ms_p50",
    "send_to_fill_ms_p95",
    "fill_delay_h_mean",
]


def summarise(fills: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per value of column ``by``: fills, notional (quote currency), mean and median slippage vs the
    decision price, mean slippage vs arrival, mean fee (bps), latency percentiles (ms) and the mean
    delay in bar-time (hours). Means are per fill (the currencies of notionals differ)."""
    if fills.empty:
        return pd.DataFrame(columns=[by, *SUMMARY_COLUMNS])
    g = fills.groupby(by, sort=True)
    out = pd.DataFrame(
        {
            "fills": g.size(),
            "notional": g["notional"].sum(),
            "slip_decision_bps": g["slip_decision_bps"].mean(),
            "slip_decision_bps_median": g["slip_decision_bps"].median(),
            "slip_arrival_bps": g["slip_arrival_bps"].mean(),
            "fee_bps": g["fee_bps"].mean(),
            "decide_to_send_ms_p50": g["decide_to_send_ms"].median(),
            "send_to_fill_ms_p50": g["send_to_fill_ms"].median(),
            "send_to_fill_ms_p95": g["send_to_fill_ms"].quantile(0.95),
            "fill_delay_h_mean": g["fill_delay_h"].mean(),
        }
    )
    return out.reset_index()


@dataclass
class ExecutionReport:
    """The fills of one or more journals and their summaries, by grouping."""

    journals: list[Path]
    fills: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def overall(self) -> pd.DataFrame:
        return summarise(self.fills.assign(all="all"), "all")


def build_report(journals: list[str | Path]) -> ExecutionReport:
    """Read the journals' fills and summarise them by venue, symbol, order type and hour."""
    paths = [Path(j) for j in journals]
    frames = [load_fills(p) for p in paths]
    fills = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    tables = {title: summarise(fills, col) for title, col in GROUPS}
    return ExecutionReport(paths, fills, tables)


# ------------------------------------------------------------------------------------------ HTML


def page(title: str, intro: str, sections: list[tuple[str, str]]) -> str:
    """A self-contained page in the run report's style (plotly.js inlined once): ``sections`` are
    (heading, HTML) pairs."""
    from plotly.offline import get_plotlyjs

    from hflite.analytics.report import _CSS

    body = "".join(f"<section><h2>{escape(h)}</h2>{html}</section>" for h, html in sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f'<header><h1>{escape(title)}</h1></header><main><p class="note">{intro}</p>{body}</main>'
        "</body></html>\n"
    )


def figure(fig: Any, name: str) -> str:
    """A plotly figure as a div in the run report's template."""
    from hflite.analytics.report import _figure_html

    return str(_figure_html(fig, name))


def table_html(frame: pd.DataFrame, digits: int = 2) -> str:
    """A frame as an HTML table (numbers rounded, missing values as a dash)."""
    return str(
        frame.to_html(
            index=False, na_rep="—", float_format=lambda v: f"{v:,.{digits}f}", border=0, escape=True
        )
    )


def write_html(report: ExecutionReport, out_dir: str | Path) -> Path:
    """Write ``execution.html`` (tables and plots) and ``execution_fills.csv`` to ``out_dir``."""
    import plotly.graph_objects as go

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fills = report.fills
    fills.to_csv(out / "execution_fills.csv", index=False)
    sections: list[tuple[str, str]] = [("overall", table_html(report.overall))]
    if not fills.empty:
        hist = go.Figure()
        for otype, part in fills.groupby("order_type"):
            hist.add_trace(go.Histogram(x=part["slip_decision_bps"], name=str(otype), opacity=0.7))
        hist.update_layout(barmode="overlay", xaxis_title="slippage vs decision (bps, + = cost)",
                           yaxis_title="fills", height=320)  # fmt: skip
        sections.append(("slippage distribution", figure(hist, "slippage-hist")))
        by_symbol = report.tables["symbol"]
        bars = go.Figure(
            [
                go.Bar(x=by_symbol["symbol"], y=by_symbol["slip_decision_bps"], name="vs decision"),
                go.Bar(x=by_symbol["symbol"], y=by_symbol["slip_arrival_bps"], name="vs arrival"),
                go.Bar(x=by_symbol["symbol"], y=by_symbol["fee_bps"], name="fees"),
            ]
        )
        bars.update_layout(barmode="group", yaxis_title="bps (mean per fill)", height=320)
        sections.append(("cost by symbol", figure(bars, "cost-symbol")))
        hours = report.tables["hour (UTC)"]
        by_hour = go.Figure(go.Bar(x=hours["hour_utc"], y=hours["slip_decision_bps"], text=hours["fills"]))
        by_hour.update_layout(xaxis_title="hour of execution (UTC)", yaxis_title="bps", height=300)
        sections.append(("slippage by hour", figure(by_hour, "slippage-hour")))
        when = pd.to_datetime(fills["ts"].astype("int64"), unit="ns", utc=True)
        scatter = go.Figure(
            go.Scatter(x=when, y=fills["slip_decision_bps"], mode="markers", text=fills["order_id"],
                       marker={"size": 6}, name="fills")
        )  # fmt: skip
        scatter.update_layout(yaxis_title="slippage vs decision (bps)", height=320)
        sections.append(("slippage over time", figure(scatter, "slippage-time")))
        lat = fills[["decide_to_send_ms", "send_to_fill_ms", "decide_to_applied_ms"]]
        if lat.notna().any().any():
            box = go.Figure([go.Box(y=lat[c], name=c) for c in lat.columns if lat[c].notna().any()])
            box.update_layout(yaxis_title="ms", yaxis_type="log", height=320)
            sections.append(("latency", figure(box, "latency")))
    for title, frame in report.tables.items():
        sections.append((f"by {title}", table_html(frame)))
    names = ", ".join(escape(str(p)) for p in report.journals)
    intro = (
        f"{len(fills)} fills from {names}. Slippage in basis points, positive = a cost to us, against the "
        "decision price (the decision bar's close; a stop's or limit's own price) and the arrival price "
        "(the last price known when sent); fees in bps of notional; latency in ms on the wall clock "
        "(send &rarr; fill only where the venue executes on the wall clock); fill delay in hours of "
        "bar-time."
    )
    path = out / "execution.html"
    path.write_text(page("Execution quality", intro, sections), encoding="utf-8")
    return path
