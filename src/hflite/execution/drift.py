"""Live vs backtest drift (``hflite drift``): the live period replayed through the backtester on the
bars the runtime stored, with the same config, and the difference in P&L taken apart.

P&L of one side over the period (from ``since`` to the journal's last decided bar-time), in USD at the
end's exchange rates: the positions it held at ``since`` marked from then to the end, plus every fill
of the period marked to the end's close, less its fees. Per fill: ``side * qty * (close_end - price) -
fee``. Orders are matched by their client order id without the run's prefix, i.e. by decision
bar-time, symbol and kind (entry, exit, stop-loss, take-profit). The difference (live - backtest) is
the exact sum of:

- **carried**: the positions held at ``since`` differed (earlier drift, marked over the period);
- **decisions**: orders that exist on one side only (their whole P&L);
- **decisions** also holds a matched order's different size (live sized it on its own equity): the
  backtest's fill ratio applied to live's order size, ``q* = qty_bt * order_live / order_bt``, gives
  ``side * (q* - qty_bt) * (close_end - price_bt)``;
- **missed**: for a matched order, what live filled short of (or beyond) ``q*``, valued at the
  backtest's price: ``side * (qty_live - q*) * (close_end - price_bt)``;
- **latency**: live filled on a later bar than the backtest: the move of the bar's open from the
  backtest's fill bar to live's, on live's quantity;
- **slippage**: the rest of the price difference on live's quantity: ``side * qty_live * (price_bt +
  move - price_live)``;
- **fees**: ``fees_bt - fees_live``;
- **other**: book adjustments a human accepted (``hflite reconcile --accept``): live only.

It also fits the slippage model ([execution.slippage]) to live's own market and stop fills: the sim
venue's model is linear in its parameters (``ref * bps[class] / 1e4 + range_frac * prev_range``
against the bar's open, or a stop's trigger), so non-negative least squares recovers them, and
``snippet`` writes them as TOML the user can adopt.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hflite.config import Settings
from hflite.domain.instrument import Instrument
from hflite.engine.result import RunResult
from hflite.execution.quality import QualityError, figure, page, table_html

#: The parts of the difference, in the order the report shows them.
PARTS = ("carried", "decisions", "missed", "latency", "slippage", "fees", "other")


class DriftError(Exception):
    """Drift cannot be measured (no journal, no bars, nothing decided yet); one line that says why."""


@dataclass(frozen=True, slots=True)
class SideFill:
    """One fill of one side, as drift needs it."""

    key: str  # the order's id without the run's prefix ("" for a book adjustment)
    symbol: str
    side: int
    qty: float
    price: float
    fee: float
    bar_ts: int  # the bar-time the fill was booked at
    order_qty: float = 0.0  # the order's quantity (0: unknown)


@dataclass
class Attribution:
    """Live and backtest P&L of the period and the parts of their difference (USD)."""

    live_pnl: float
    backtest_pnl: float
    parts: dict[str, float]
    rows: pd.DataFrame  # per order key: its contribution to each part

    @property
    def difference(self) -> float:
        return self.live_pnl - self.backtest_pnl


@dataclass(frozen=True, slots=True)
class Marks:
    """Prices for marking: per symbol, the close at ``since`` (last before it) and at the end, the end's
    USD rate of its quote currency, and each bar's open by bar-time (for latency)."""

    close_since: dict[str, float]
    close_end: dict[str, float]
    fx_end: dict[str, float]
    opens: dict[str, dict[int, float]] = field(default_factory=dict)


def _signed_pnl(f: SideFill, marks: Marks) -> float:
    return (f.side * f.qty * (marks.close_end[f.symbol] - f.price) - f.fee) * marks.fx_end[f.symbol]


def side_pnl(carried: dict[str, float], fills: list[SideFill], marks: Marks) -> float:
    """One side's P&L of the period: carried positions marked from ``since`` to the end, plus fills."""
    pnl = sum(
        q * (marks.close_end[s] - marks.close_since[s]) * marks.fx_end[s] for s, q in carried.items() if q
    )
    return pnl + sum(_signed_pnl(f, marks) for f in fills)


def attribute(
    live_carried: dict[str, float],
    live: list[SideFill],
    bt_carried: dict[str, float],
    bt: list[SideFill],
    marks: Marks,
) -> Attribution:
    """Take the live - backtest P&L difference apart into ``PARTS`` (see the module docstring); the
    parts sum to the difference exactly (up to float rounding)."""
    parts = dict.fromkeys(PARTS, 0.0)
    rows: list[dict[str, Any]] = []
    for s in set(live_carried) | set(bt_carried):
        diff = live_carried.get(s, 0.0) - bt_carried.get(s, 0.0)
        if diff:
            value = diff * (marks.close_end[s] - marks.close_since[s]) * marks.fx_end[s]
            parts["carried"] += value
            rows.append({"key": f"carried {s}", "symbol": s, "carried": value})
    by_live: dict[str, list[SideFill]] = {}
    for f in live:
        by_live.setdefault(f.key, []).append(f)
    by_bt: dict[str, list[SideFill]] = {}
    for f in bt:
        by_bt.setdefault(f.key, []).append(f)
    for key in sorted(set(by_live) | set(by_bt)):
        lf, bf = by_live.get(key, []), by_bt.get(key, [])
        row = _key_parts(key, lf, bf, marks)
        for p in PARTS:
            parts[p] += row.get(p, 0.0)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["key", "symbol", *PARTS]).fillna(0.0)
    frame["total"] = frame[list(PARTS)].sum(axis=1)
    return Attribution(side_pnl(live_carried, live, marks), side_pnl(bt_carried, bt, marks), parts, frame)


def _key_parts(key: str, lf: list[SideFill], bf: list[SideFill], marks: Marks) -> dict[str, Any]:
    symbol = (lf or bf)[0].symbol
    row: dict[str, Any] = {"key": key, "symbol": symbol}
    if not key:  # book adjustments: live only
        row["other"] = sum(_signed_pnl(f, marks) for f in lf)
        return row
    if not lf or not bf or len({f.side for f in lf + bf}) > 1:  # one side only, or opposite directions
        row["decisions"] = sum(_signed_pnl(f, marks) for f in lf) - sum(_signed_pnl(f, marks) for f in bf)
        return row
    fx, end = marks.fx_end[symbol], marks.close_end[symbol]
    side = lf[0].side
    q_live, q_bt = sum(f.qty for f in lf), sum(f.qty for f in bf)
    p_bt = sum(f.qty * f.price for f in bf) / q_bt
    first_bt = min(f.bar_ts for f in bf)
    opens = marks.opens.get(symbol, {})
    base = opens.get(first_bt, math.nan)
    latency = slippage = 0.0
    for f in lf:
        move = opens.get(f.bar_ts, math.nan) - base if f.bar_ts != first_bt else 0.0
        if not math.isfinite(move):
            move = 0.0  # a bar without a known open: the whole difference counts as slippage
        latency -= side * f.qty * move * fx
        slippage += side * f.qty * (p_bt + move - f.price) * fx
    o_live, o_bt = lf[0].order_qty, bf[0].order_qty
    q_star = q_bt * o_live / o_bt if o_live > 0 and o_bt > 0 else q_bt
    if not math.isfinite(q_star):  # a vanishing backtest order size: the sizes differ by decision
        q_star = q_live
    row["decisions"] = side * (q_star - q_bt) * (end - p_bt) * fx
    row["missed"] = side * (q_live - q_star) * (end - p_bt) * fx
    row["latency"] = latency
    row["slippage"] = slippage
    row["fees"] = (sum(f.fee for f in bf) - sum(f.fee for f in lf)) * fx
    return row


# --------------------------------------------------------------------------- slippage model fit


@dataclass
class SlippageFit:
    """Fitted [execution.slippage] parameters, with what they were fitted on."""

    model: str
    bps: dict[str, float]  # asset class -> bps (only the classes with fills)
    range_frac: float | None
    fills: int
    rmse_bps: float
    current: dict[str, Any]

    def snippet(self) -> str:
        """The fit as a TOML snippet for the config (classes without fills keep the config's value)."""
        lines = [
            f"# [execution.slippage] fitted by hflite drift on {self.fills} of this run's own fills",
            f"# (rms error {self.rmse_bps:.2f} bps); asset classes without fills keep their configured bps.",
            "[execution.slippage]",
            f'model = "{self.model}"',
        ]
        if self.range_frac is not None:
            lines.append(f"range_frac = {self.range_frac:.6g}")
        lines.append("")
        lines.append("[execution.slippage.bps]")
        merged = {**{str(k): float(v) for k, v in self.current["bps"].items()}, **self.bps}
        for cls in sorted(merged):
            lines.append(f"{cls} = {merged[cls]:.6g}")
        return "\n".join(lines) + "\n"


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0, for a few columns: the best of the unconstrained fits
    on every subset of columns whose coefficients come out non-negative (exact for small problems)."""
    n = a.shape[1]
    best, best_err = np.zeros(n), float(np.sum(b * b))
    for k in range(1, n + 1):
        for cols in itertools.combinations(range(n), k):
            sub = a[:, cols]
            coef, *_ = np.linalg.lstsq(sub, b, rcond=None)
            if np.any(coef < 0):
                continue
            err = float(np.sum((sub @ coef - b) ** 2))
            if err < best_err - 1e-18:
                best_err, best = err, np.zeros(n)
                best[list(cols)] = coef
    return best


def fit_slippage(
    observations: pd.DataFrame, settings: Settings, instruments: dict[str, Instrument]
) -> SlippageFit | None:
    """Fit the configured slippage model to ``observations`` (columns symbol, ref, prev_range, slip:
    the adverse move in price units from the model's reference price). None without observations."""
    cfg = settings.execution.slippage
    current = {"bps": {c.value: v for c, v in cfg.bps.items()}, "range_frac": cfg.range_frac}
    obs = observations[observations["ref"] > 0].copy()
    if obs.empty:
        return None
    classes = sorted({instruments[s].asset_class.value for s in obs["symbol"]})
    cls_of = obs["symbol"].map(lambda s: instruments[s].asset_class.value)
    cols = [np.where(cls_of == c, obs["ref"] / 1e4, 0.0) for c in classes]
    vol = cfg.model == "volatility"
    if vol:
        cols.append(np.nan_to_num(obs["prev_range"].to_numpy(float), nan=0.0))
    a = np.column_stack(cols)
    y = obs["slip"].to_numpy(float)
    # scale rows by 1 / ref: fit in bps, so expensive instruments do not dominate
    w = 1e4 / obs["ref"].to_numpy(float)
    coef = nnls(a * w[:, None], y * w)
    resid = (a @ coef - y) * w
    return SlippageFit(
        cfg.model,
        {c: float(coef[n]) for n, c in enumerate(classes)},
        float(coef[-1]) if vol else None,
        len(obs),
        float(np.sqrt(np.mean(resid**2))),
        current,
    )


def slippage_observations(fills: pd.DataFrame, prices: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Live market and stop fills as (symbol, ref, prev_range, slip) against the sim venue's reference:
    a market order's bar open; a stop's trigger, or the open when the bar gapped through it (a stop
    placed inside the bar never saw its open)."""
    rows = []
    for f in fills.itertuples(index=False):
        bars = prices.get(f.symbol)
        if bars is None or f.order_type not in ("market", "stop") or pd.isna(f.bar_ts):
            continue
        ts = pd.Timestamp(int(f.bar_ts), unit="ns", tz="UTC")
        if ts not in bars.index:
            continue
        k = bars.index.get_loc(ts)
        bar = bars.iloc[k]
        prev_range = float(bars["high"].iloc[k - 1] - bars["low"].iloc[k - 1]) if k > 0 else math.nan
        buy = f.side == "buy"
        ref = float(bar["open"])
        if f.order_type == "stop":
            trigger = float(f.limit_price)
            saw_open = f.decision_ts != f.bar_ts
            gapped = saw_open and (ref >= trigger if buy else ref <= trigger)
            ref = ref if gapped else trigger
        slip = (f.price - ref) if buy else (ref - f.price)
        rows.append({"symbol": f.symbol, "ref": ref, "prev_range": prev_range, "slip": slip})
    return pd.DataFrame(rows, columns=["symbol", "ref", "prev_range", "slip"])


# ------------------------------------------------------------------------------ the whole measure


@dataclass
class DriftReport:
    """What ``hflite drift`` shows and writes."""

    journal: Path
    since: pd.Timestamp
    end: pd.Timestamp
    attribution: Attribution
    by_symbol: pd.DataFrame
    live_fills: int
    backtest_fills: int
    fit: SlippageFit | None
    backtest: RunResult
    notes: list[str] = field(default_factory=list)


def _strip(order_id: str, prefix: str) -> str:
    return order_id[len(prefix) :] if prefix and order_id.startswith(prefix) else order_id


def _live_side(
    fills: pd.DataFrame, adjustments: list[SideFill], since_ns: int, prefix: str
) -> tuple[dict[str, float], list[SideFill]]:
    carried: dict[str, float] = {}
    period: list[SideFill] = []
    for f in fills.itertuples(index=False):
        side = 1 if f.side == "buy" else -1
        bar_ts = int(f.bar_ts) if not pd.isna(f.bar_ts) else int(f.ts)
        if bar_ts < since_ns:
            carried[f.symbol] = carried.get(f.symbol, 0.0) + side * f.qty
            continue
        key = _strip(f.order_id, prefix)
        period.append(SideFill(key, f.symbol, side, f.qty, f.price, f.fee, bar_ts, f.order_qty))
    for a in adjustments:
        if a.bar_ts < since_ns:
            carried[a.symbol] = carried.get(a.symbol, 0.0) + a.side * a.qty
        else:
            period.append(a)
    return carried, period


def _bt_side(result: RunResult, since_ns: int, end_ns: int) -> tuple[dict[str, float], list[SideFill]]:
    carried: dict[str, float] = {}
    period: list[SideFill] = []
    ordered = dict(zip(result.orders["order_id"], result.orders["qty"].astype(float), strict=True))
    for f in result.fills.itertuples(index=False):
        side = 1 if f.side == "buy" else -1
        ts = int(pd.Timestamp(f.ts).value)
        if ts > end_ns:
            continue
        if ts < since_ns:
            carried[f.symbol] = carried.get(f.symbol, 0.0) + side * f.qty
            continue
        fill = SideFill(f.order_id, f.symbol, side, float(f.qty), float(f.price), float(f.fee), ts,
                        ordered.get(f.order_id, 0.0))  # fmt: skip
        period.append(fill)
    return carried, period


def _adjustments(journal: Path) -> list[SideFill]:
    import json
    import sqlite3

    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10.0)
    try:
        rows = db.execute("SELECT bar_ts, body FROM adjustments ORDER BY seq").fetchall()
    except sqlite3.Error:
        rows = []
    finally:
        db.close()
    out = []
    for bar_ts, body in rows:
        b = json.loads(body)
        qty = float(b["qty"])
        out.append(SideFill("", str(b["symbol"]), 1 if qty > 0 else -1, abs(qty), float(b["price"]),
                            float(b.get("fee", 0.0)), int(bar_ts)))  # fmt: skip
    return out


def _marks(result: RunResult, since_ns: int, end_ns: int, instruments: dict[str, Instrument]) -> Marks:
    close_since, close_end, fx_end, opens = {}, {}, {}, {}
    for sym, bars in result.prices.items():
        idx = bars.index.asi8
        before = np.flatnonzero(idx < since_ns)
        upto = np.flatnonzero(idx <= end_ns)
        if not len(upto):
            continue
        close_end[sym] = float(bars["close"].iloc[upto[-1]])
        close_since[sym] = float(bars["close"].iloc[before[-1]]) if len(before) else close_end[sym]
        opens[sym] = dict(zip(idx.tolist(), bars["open"].to_numpy(float).tolist(), strict=True))
        fx_end[sym] = _fx(result, instruments[sym].currency, end_ns)
    return Marks(close_since, close_end, fx_end, opens)


def _fx(result: RunResult, currency: str, end_ns: int) -> float:
    """USD per unit of ``currency`` at the end (from the run's FX pair closes)."""
    from hflite.domain.instrument import fx_pair_for

    pair = fx_pair_for(currency)
    if pair is None:
        return 1.0
    sym, invert = pair
    bars = result.prices.get(sym)
    if bars is None:
        raise DriftError(f"no {sym} bars to convert {currency} to USD")
    rate = float(bars["close"][bars.index.asi8 <= end_ns].iloc[-1])
    return 1.0 / rate if invert else rate


def measure(
    settings: Settings,
    journal: str | Path,
    since: date | pd.Timestamp | None = None,
    store: Any = None,
) -> DriftReport:
    """Replay the journal's live period through the backtester with ``settings`` and attribute the
    P&L difference; ``since`` defaults to the journal's first decided bar-time."""
    from hflite.engine.run import backtest, open_store
    from hflite.execution.oms import SqliteJournal
    from hflite.execution.quality import load_fills

    path = Path(journal)
    try:
        j = SqliteJournal(path, create=False)
    except Exception as exc:
        raise DriftError(str(exc)) from None
    try:
        progress = j.progress()
    finally:
        j.close()
    if progress is None:
        raise DriftError(f"journal {path} has no decided bar-time yet: nothing to compare")
    first_ts, last_ts, _ = progress
    store = store if store is not None else open_store(settings)
    window = _window(settings, store, first_ts, last_ts)
    result = backtest(window, store, run_id="drift-backtest")
    since_ts = pd.Timestamp(first_ts, unit="ns", tz="UTC") if since is None else pd.Timestamp(since, tz="UTC")
    since_ns, end_ns = int(since_ts.value), int(last_ts)
    try:
        fills = load_fills(path)
    except QualityError as exc:
        raise DriftError(str(exc)) from None
    prefix = f"{settings.run.name}."
    from hflite.domain.instrument import instrument_for

    instruments = {s: instrument_for(s) for s in result.prices}
    marks = _marks(result, since_ns, end_ns, instruments)
    live_carried, live = _live_side(fills, _adjustments(path), since_ns, prefix)
    bt_carried, bt = _bt_side(result, since_ns, end_ns)
    missing = sorted({f.symbol for f in live + bt} - set(marks.close_end))
    if missing:
        raise DriftError(f"no bars for {', '.join(missing)} in the store for the live period")
    att = attribute(live_carried, live, bt_carried, bt, marks)
    by_symbol = att.rows.groupby("symbol")[[*PARTS, "total"]].sum().reset_index()
    obs = slippage_observations(fills[fills["bar_ts"].fillna(0).astype("int64") >= since_ns], result.prices)
    fit = fit_slippage(obs, settings, instruments)
    notes = []
    if fills.empty:
        notes.append("the journal holds no fills")
    return DriftReport(
        path,
        since_ts,
        pd.Timestamp(last_ts, unit="ns", tz="UTC"),
        att,
        by_symbol,
        len(live),
        len(bt),
        fit,
        result,
        notes,
    )


def _window(settings: Settings, store: Any, first_ts: int, last_ts: int) -> Settings:
    """The backtest's window: the config's when the journal's first decided bar-time falls in its
    first week (a recorded run of it), else the window a live run of it had (``engine.live``); it ends
    at the journal's last decided bar-time."""
    from hflite.engine.live import live_window

    start = pd.Timestamp(settings.run.start, tz="UTC")
    first = pd.Timestamp(first_ts, unit="ns", tz="UTC")
    if not start <= first <= start + pd.Timedelta(days=7):
        settings = live_window(settings, store, first_ts, last_ts)
    end = pd.Timestamp(last_ts, unit="ns", tz="UTC").date()
    run = settings.run.model_copy(update={"end": min(end, settings.run.end) if start <= first else end})
    return settings.model_copy(update={"run": run})


# ------------------------------------------------------------------------------------------ HTML


def parts_frame(report: DriftReport) -> pd.DataFrame:
    """The parts of the difference as rows, with the total and both sides' P&L."""
    att = report.attribution
    rows = [{"part": p, "usd": att.parts[p]} for p in PARTS]
    rows += [
        {"part": "difference (live - backtest)", "usd": att.difference},
        {"part": "live P&L", "usd": att.live_pnl},
        {"part": "backtest P&L", "usd": att.backtest_pnl},
    ]
    return pd.DataFrame(rows)


def write_html(report: DriftReport, out_dir: str | Path) -> Path:
    """Write ``drift.html``, ``drift_orders.csv`` and (with a fit) ``slippage_fit.toml`` to ``out_dir``."""
    import plotly.graph_objects as go

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    att = report.attribution
    att.rows.to_csv(out / "drift_orders.csv", index=False)
    if report.fit is not None:
        (out / "slippage_fit.toml").write_text(report.fit.snippet(), encoding="utf-8")
    steps = [att.backtest_pnl, *[att.parts[p] for p in PARTS], att.live_pnl]
    water = go.Figure(
        go.Waterfall(
            x=["backtest P&L", *PARTS, "live P&L"],
            measure=["absolute", *["relative"] * len(PARTS), "total"],
            y=steps,
        )
    )
    water.update_layout(yaxis_title="USD", height=360)
    top = att.rows.reindex(att.rows["total"].abs().sort_values(ascending=False).index).head(25)
    sections = [
        ("live vs backtest", figure(water, "drift-waterfall") + table_html(parts_frame(report))),
        ("by symbol", table_html(report.by_symbol)),
        ("largest contributions (orders)", table_html(top)),
    ]
    if report.fit is not None:
        sections.append(("slippage model fitted to live fills", f"<pre>{report.fit.snippet()}</pre>"))
    intro = (
        f"Journal {report.journal}: live from {report.since:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} "
        f"UTC ({report.live_fills} live fills) against a backtest of the same config on the stored bars "
        f"({report.backtest_fills} fills). P&amp;L in USD at the end's rates; the parts sum to the "
        "difference."
    )
    path = out / "drift.html"
    path.write_text(page("Live vs backtest drift", intro, sections), encoding="utf-8")
    return path


__all__ = [
    "PARTS",
    "Attribution",
    "DriftError",
    "DriftReport",
    "Marks",
    "SideFill",
    "SlippageFit",
    "attribute",
    "fit_slippage",
    "measure",
    "nnls",
    "side_pnl",
    "slippage_observations",
    "write_html",
]
