"""What a run hands to analytics and reports: plain pandas objects at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

#: Columns of ``RunResult.trades`` (one row per round trip; open trades are marked to market).
TRADE_COLUMNS = [
    "trade_id",
    "symbol",
    "direction",
    "qty",
    "entry_ts",
    "entry_price",
    "exit_ts",
    "exit_price",
    "pnl",
    "pnl_usd",
    "fees_usd",
    "return_pct",
    "bars_held",
    "entry_reason",
    "exit_reason",
    "is_open",
    "exit_fee_est_usd",
]
#: Columns of ``RunResult.orders``.
ORDER_COLUMNS = [
    "order_id",
    "symbol",
    "side",
    "type",
    "qty",
    "price",
    "tif",
    "status",
    "filled_qty",
    "avg_fill_price",
    "created_ts",
    "closed_ts",
    "reason",
    "decision_id",
    "parent_id",
]
#: Columns of ``RunResult.fills``.
FILL_COLUMNS = [
    "order_id",
    "symbol",
    "side",
    "qty",
    "price",
    "notional_usd",
    "fee",
    "fee_usd",
    "slippage",
    "ts",
    "liquidity_capped",
]
#: Columns of ``RunResult.verdicts`` (one row per intent). ``reason`` is the gate's, ``intent_reason``
#: the strategy's; ``price`` is the intent's reference price in the quote currency and ``fx`` converts
#: it to USD; ``rules`` lists the rules that rejected or cut it (";"-joined); ``values`` is the JSON of
#: the strategy's indicator values at the decision.
VERDICT_COLUMNS = [
    "intent_id",
    "symbol",
    "ts",
    "status",
    "qty_requested",
    "qty_approved",
    "reason",
    "kind",
    "side",
    "intent_reason",
    "price",
    "atr",
    "fx",
    "rules",
    "order_id",
    "values",
]
#: Columns of ``RunResult.risk_checks`` (one row per check of each verdict, in the gate's order).
CHECK_COLUMNS = ["intent_id", "symbol", "ts", "name", "value", "limit", "passed"]
#: Columns of ``RunResult.risk_events``: risk-state changes and circuit-breaker trips, by time.
RISK_EVENT_COLUMNS = ["ts", "kind", "symbol", "detail"]
#: Columns of ``RunResult.risk_spans``: time spent halted, paused, killed, locked or protected.
#: ``end_ts`` is empty when the span was still in force at the run's end; ``days`` then runs to the
#: run's last point.
RISK_SPAN_COLUMNS = ["kind", "start_ts", "end_ts", "days", "detail"]
#: Columns of ``RunResult.risk_limits`` (every limit the run's risk manager enforced, as text).
RISK_LIMIT_COLUMNS = ["limit", "value"]


def _empty(columns: list[str]) -> Any:
    return lambda: pd.DataFrame(columns=columns)


@dataclass
class RunResult:
    """Everything one run produced. Timestamps are tz-aware UTC (a bar's close time).

    ``equity``, ``cash``, ``gross_exposure`` and ``net_exposure`` are USD series on the run's
    timeline (one point per bar-time of any symbol). ``positions`` holds each symbol's market
    value in USD on the same index. ``benchmarks`` holds buy-and-hold equity curves (USD, same
    start cash) of the benchmark symbols over the same window, each on its own calendar: from its first
    daily bar dated on or after ``start`` to its last dated on or before ``end`` (``benchmark_last``),
    whatever the run trades. ``risk_free`` is the annual rate in
    percent (FEDFUNDS, point-in-time) on the same index. The audit trail is ``verdicts`` (one row per
    intent), ``risk_checks`` (every check of every verdict), ``risk_events``, ``risk_spans`` and
    ``risk_limits``.
    """

    run_id: str
    strategy: str
    symbols: list[str]
    start: pd.Timestamp
    end: pd.Timestamp
    initial_cash: float
    equity: pd.Series
    cash: pd.Series
    gross_exposure: pd.Series
    net_exposure: pd.Series
    positions: pd.DataFrame
    trades: pd.DataFrame
    orders: pd.DataFrame
    fills: pd.DataFrame
    verdicts: pd.DataFrame
    prices: dict[str, pd.DataFrame]  # per symbol: index ts, columns open/high/low/close/volume
    benchmarks: dict[str, pd.Series]
    risk_free: pd.Series
    config: dict[str, Any]
    data_versions: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    halted_at: pd.Timestamp | None = None
    stats: dict[str, float] = field(default_factory=dict)  # engine counters: bars, events, seconds
    risk_checks: pd.DataFrame = field(default_factory=_empty(CHECK_COLUMNS))
    risk_events: pd.DataFrame = field(default_factory=_empty(RISK_EVENT_COLUMNS))
    risk_spans: pd.DataFrame = field(default_factory=_empty(RISK_SPAN_COLUMNS))
    risk_limits: pd.DataFrame = field(default_factory=_empty(RISK_LIMIT_COLUMNS))
    benchmark_last: dict[str, pd.Timestamp] = field(default_factory=dict)  # each benchmark's last bar date
    benchmark_risk_free: dict[str, pd.Series] = field(default_factory=dict)  # ``risk_free`` on its calendar
    ai: Any = None  # hflite.ai.evaluation.AIResult for the ai_ensemble strategy
    llm: Any = None  # hflite.ai.llm.passes.LLMRunResult when [llm] is on
