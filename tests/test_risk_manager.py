"""The risk manager over time: loss-limit periods, the drawdown halt, human commands.

Timelines are random hourly and daily points across DST changes, month and year ends (and points
a nanosecond either side of local midnight); the expected periods come from pandas, independently
of the manager's own arithmetic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hflite.domain.instrument import AssetClass, Calendar, Instrument
from hflite.domain.order import Side
from hflite.domain.signal import Exits, IntentKind, OrderIntent, VerdictStatus
from hflite.engine.market import MarketData, market_from_arrays
from hflite.risk.limits import RiskLimits
from hflite.risk.manager import PERIODS, RiskManager, Span

INST = Instrument("X", AssetClass.CRYPTO, "USD", Calendar.ALWAYS, 0.01, 1.0)
HOUR = 3_600_000_000_000
DAY = 24 * HOUR
START = 100_000.0
#: Zones with DST changes at 02:00 (New York), 01:00 UTC (London), 03:00 (Sydney, southern summer)
#: and at midnight itself (Sao Paulo until 2019: some days have no 00:00).
ZONES = ["America/New_York", "Europe/London", "Australia/Sydney", "America/Sao_Paulo", "UTC"]
#: Starts (UTC) a few days before DST changes, month ends, a leap day and a year end.
STARTS = [
    "2018-11-01 12:00",  # Sao Paulo springs forward at midnight on 2018-11-04
    "2019-02-14 12:00",  # Sao Paulo falls back at midnight on 2019-02-17
    "2021-03-11 03:00",  # New York DST on 03-14; London on 03-28
    "2021-10-28 22:00",  # London falls back on 10-31; month end
    "2021-04-01 00:00",  # Sydney falls back on 04-04
    "2020-02-26 15:00",  # leap day, month end
    "2021-12-29 23:00",  # year end; 2022-01-03 is a Monday
]


def market(ts: np.ndarray) -> MarketData:
    n = len(ts)
    close = np.full(n, 100.0)
    bars = {"ts": ts, "open": close, "high": close, "low": close, "close": close, "volume": np.ones(n)}
    return market_from_arrays({"X": bars}, {"X": INST}, ["X"])


@st.composite
def timelines(draw) -> tuple[str, np.ndarray]:
    """A zone and strictly increasing ns timestamps: hourly and daily steps, some at local midnight."""
    tz = draw(st.sampled_from(ZONES))
    t0 = pd.Timestamp(draw(st.sampled_from(STARTS)), tz="UTC").value
    steps = draw(
        st.lists(
            st.sampled_from([HOUR, HOUR, 3 * HOUR, 7 * HOUR, DAY, DAY + HOUR, 3 * DAY]),
            min_size=3,
            max_size=80,
        )
    )
    ts = t0 + np.cumsum([0, *steps], dtype=np.int64)
    if draw(st.booleans()):  # points at and a nanosecond either side of each local start of day
        local = pd.DatetimeIndex(ts, tz="UTC").tz_convert(tz)
        days = pd.DatetimeIndex(pd.unique(local.tz_localize(None).normalize()))
        starts = days.tz_localize(tz, nonexistent="shift_forward", ambiguous=False).as_unit("ns").asi8
        offsets = draw(st.lists(st.sampled_from([-1, 0, 1, -1_000, -(10**9)]), min_size=1, max_size=3))
        ts = np.unique(np.concatenate([ts, *[starts + o for o in offsets]]))
    return tz, ts


@st.composite
def runs(draw) -> tuple[RiskLimits, np.ndarray, np.ndarray]:
    """(limits, timeline, equity path): a random walk whose volatility makes locks and halts likely."""
    tz, ts = draw(timelines())
    limits = RiskLimits.minimal(
        period_tz=tz,
        daily_loss_pct=draw(st.sampled_from([0.0, 0.5, 1.0, 2.0])),
        weekly_loss_pct=draw(st.sampled_from([0.0, 1.0, 3.0])),
        monthly_loss_pct=draw(st.sampled_from([0.0, 2.0, 5.0])),
        max_drawdown_pct=draw(st.sampled_from([3.0, 8.0, 15.0])),
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    vol = draw(st.sampled_from([0.002, 0.01, 0.03]))
    eq = START * np.exp(np.cumsum(rng.normal(draw(st.sampled_from([-vol / 4, 0.0, vol / 4])), vol, len(ts))))
    return limits, ts, eq


def pointwise(limits: RiskLimits, ts: np.ndarray, eq: np.ndarray) -> RiskManager:
    rm = RiskManager(limits, market(ts), START)
    for i, e in enumerate(eq.tolist()):
        rm.observe(i, e)
    return rm


def expected_lock_spans(limits: RiskLimits, ts: np.ndarray, eq: np.ndarray) -> dict[str, list[tuple]]:
    """Lock spans per period from calendar periods that pandas draws in the zone, not the manager."""
    wall = pd.DatetimeIndex(ts, tz="UTC").tz_convert(limits.period_tz).tz_localize(None)
    labels = {"daily": wall.to_period("D"), "weekly": wall.to_period("W-SUN"), "monthly": wall.to_period("M")}
    limit = {
        "daily": limits.daily_loss_pct,
        "weekly": limits.weekly_loss_pct,
        "monthly": limits.monthly_loss_pct,
    }
    out: dict[str, list[tuple]] = {}
    for p in PERIODS:
        spans: list[list] = []
        locked, anchor, label = False, START, None
        for j, (lab, e) in enumerate(zip(labels[p], eq.tolist(), strict=True)):
            if lab != label:  # the first point of a period: anchor = the last equity before it
                label, anchor = lab, (eq[j - 1] if j else START)
                if locked:
                    spans[-1][1], locked = j, False
            if limit[p] and not locked and (1 - e / anchor) * 100 >= limit[p]:
                spans.append([j, None])
                locked = True
        out[p] = [tuple(s) for s in spans]
    return out


def lock_spans(rm: RiskManager) -> dict[str, list[tuple]]:
    return {p: [(s.start, s.end) for s in rm.spans if s.kind == f"{p}_loss"] for p in PERIODS}


def fingerprint(rm: RiskManager) -> tuple:
    st_ = rm.state
    return (
        rm.events,
        rm.spans,
        dict(st_.locks),
        st_.halted,
        st_.halt_reason,
        st_.peak_equity,
        st_.equity,
        rm.last_equity,
        dict(rm._key),
        dict(rm._anchor),
        rm.halted_at,
    )


# -- observe and observe_range agree -----------------------------------------------------------------
@settings(max_examples=120, deadline=None)
@given(run=runs(), cuts=st.lists(st.floats(0, 1), max_size=8))
def test_marking_a_stretch_at_once_equals_marking_it_point_by_point(run, cuts):
    limits, ts, eq = run
    n = len(ts)
    one = pointwise(limits, ts, eq)
    many = RiskManager(limits, market(ts), START)
    bounds = sorted({0, n, *(int(c * n) for c in cuts)})
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        many.observe_range(a, eq[a:b])
    assert fingerprint(many) == fingerprint(one)


def test_events_of_a_stretch_come_out_in_time_order():
    # a 5% drawdown halts at the third point, after a daily lock at the second
    ts = pd.Timestamp("2021-03-01 15:00", tz="UTC").value + HOUR * np.arange(4, dtype=np.int64)
    limits = RiskLimits.minimal(period_tz="UTC", daily_loss_pct=2.0, max_drawdown_pct=5.0)
    rm = RiskManager(limits, market(ts), START)
    rm.observe_range(0, np.array([100_000.0, 97_500.0, 94_000.0, 94_000.0]))
    assert [(e.i, e.kind) for e in rm.events] == [(1, "daily_loss"), (2, "halt")]


def test_a_zone_whose_day_starts_after_midnight_is_handled_in_a_stretch():
    # Sao Paulo sprang forward at 00:00 on 2018-11-04: that day starts at 01:00 local (03:00 UTC)
    ts = pd.Timestamp("2018-11-03 12:00", tz="UTC").value + HOUR * np.arange(30, dtype=np.int64)
    limits = RiskLimits.minimal(period_tz="America/Sao_Paulo", daily_loss_pct=1.0)
    eq = np.full(30, 98_000.0)
    rm = RiskManager(limits, market(ts), START)
    rm.observe_range(0, eq)
    # locked at point 0 (2% below 100,000); the new day begins at 03:00 UTC = point 15
    assert lock_spans(rm)["daily"] == [(0, 15)]


# -- loss limits -------------------------------------------------------------------------------------
@settings(max_examples=120, deadline=None)
@given(run=runs(), cuts=st.lists(st.floats(0, 1), max_size=4))
def test_a_loss_lock_starts_where_the_loss_reaches_the_limit_and_ends_at_the_next_period(run, cuts):
    limits, ts, eq = run
    expected = expected_lock_spans(limits, ts, eq)
    assert lock_spans(pointwise(limits, ts, eq)) == expected
    rm = RiskManager(limits, market(ts), START)
    bounds = sorted({0, len(ts), *(int(c * len(ts)) for c in cuts)})
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        rm.observe_range(a, eq[a:b])
    assert lock_spans(rm) == expected


def test_a_daily_lock_holds_through_a_recovery_and_lifts_at_the_next_new_york_day():
    # 2% limit. 2021-03-01 (a Monday) New York: 15:00 -> 97,900 (2.1% down: locked), 18:00 back at
    # 101,000 (still locked), next day 09:00 = the first point of 03-02: unlocked, anchor 101,000
    ny = ("2021-03-01 10:00", "2021-03-01 15:00", "2021-03-01 18:00", "2021-03-02 09:00")
    ts = np.array([pd.Timestamp(t, tz="America/New_York").value for t in ny], dtype=np.int64)
    rm = RiskManager(RiskLimits.minimal(daily_loss_pct=2.0), market(ts), START)
    for i, e in enumerate([100_000.0, 97_900.0, 101_000.0, 100_000.0]):
        rm.observe(i, e)
        assert ("daily" in rm.state.locks) == (i in (1, 2))
    assert lock_spans(rm)["daily"] == [(1, 3)]
    assert rm._anchor["daily"] == 101_000.0
    assert rm.state.locks == {}
    (ev,) = rm.events
    assert ev.kind == "daily_loss" and ev.i == 1
    assert ev.detail.startswith("daily loss limit: 2.10% below the period's starting equity 100,000 USD")


def test_a_point_a_nanosecond_before_local_midnight_belongs_to_the_day_it_ends():
    midnight = pd.Timestamp("2024-03-05", tz="America/New_York").value
    ts = np.array([midnight - HOUR, midnight - 1, midnight + HOUR], dtype=np.int64)
    rm = RiskManager(RiskLimits.minimal(daily_loss_pct=1.0), market(ts), START)
    for i, e in enumerate([100_000.0, 98_000.0, 98_000.0]):
        rm.observe(i, e)
    # locked at 23:59:59.999999999 on 03-04; 01:00 on 03-05 is the next day's first point
    assert lock_spans(rm)["daily"] == [(1, 2)]


def test_weeks_start_on_monday_and_months_on_the_first_in_the_zone():
    # Sunday 2022-01-02 23:00 and Monday 2022-01-03 00:30 New York; 2022-01-31 23:00 and 02-01 01:00
    ny = ("2022-01-02 23:00", "2022-01-03 00:30", "2022-01-31 23:00", "2022-02-01 01:00")
    ts = np.array([pd.Timestamp(t, tz="America/New_York").value for t in ny], dtype=np.int64)
    rm = RiskManager(RiskLimits.minimal(weekly_loss_pct=1.0, monthly_loss_pct=1.0), market(ts), START)
    for i, e in enumerate([95_000.0, 95_000.0, 90_000.0, 90_000.0]):
        rm.observe(i, e)
    spans = lock_spans(rm)
    # week of 12-27 locked at 0 (5% down), lifted on Monday (1); the week of 01-31 (anchor 95,000)
    # locks at 2 (5.3% down) and holds into February; January locks at 0 and lifts on 02-01 (3)
    assert spans["weekly"] == [(0, 1), (2, None)]
    assert spans["monthly"] == [(0, 3)]


# -- the drawdown halt -------------------------------------------------------------------------------
def test_the_halt_holds_through_any_recovery_until_a_human_resumes():
    ts = pd.Timestamp("2021-01-04", tz="UTC").value + DAY * np.arange(6, dtype=np.int64)
    rm = RiskManager(RiskLimits.minimal(max_drawdown_pct=15.0), market(ts), START)
    for i, e in enumerate([110_000.0, 93_000.0, 150_000.0, 120_000.0]):  # 15.45% below 110,000 at 1
        rm.observe(i, e)
        assert rm.state.halted == (i >= 1)
    assert rm.halted_at == 1 and rm.state.halt_reason.startswith("drawdown 15.45% reached the 15% limit")
    rm.command("resume", "checked", 3)
    assert not rm.state.halted and rm.state.peak_equity == 120_000.0  # re-based: not the 150,000 high
    rm.observe(4, 104_000.0)  # 13.3% below 120,000 (30.7% below 150,000): no halt
    assert not rm.state.halted
    rm.observe(5, 101_000.0)  # 15.8% below 120,000: halts again
    assert rm.state.halted and rm.halted_at == 1
    assert [(s.kind, s.start, s.end) for s in rm.spans] == [("halted", 1, 3), ("halted", 5, None)]
    assert [(e.i, e.kind) for e in rm.events] == [(1, "halt"), (3, "resume"), (5, "halt")]


@settings(max_examples=100, deadline=None)
@given(run=runs(), resumes=st.sets(st.integers(0, 400), max_size=6))
def test_a_halt_lifts_only_on_resume_and_re_trips_only_from_the_re_based_peak(run, resumes):
    limits, ts, eq = run
    rm = RiskManager(limits, market(ts), START)
    peak, halted, spans = START, False, []
    for i, e in enumerate(eq.tolist()):
        rm.observe(i, e)
        peak = max(peak, e)
        if not halted and (1 - e / peak) * 100 >= limits.max_drawdown_pct:
            halted = True
            spans.append((i, None))
        if i in resumes:
            rm.command("resume", "", i)
            if halted:
                halted, peak = False, e
                spans[-1] = (spans[-1][0], i)
        assert rm.state.halted == halted
    assert [(s.start, s.end) for s in rm.spans if s.kind == "halted"] == spans
    assert [e.i for e in rm.events if e.kind == "halt"] == [s[0] for s in spans]


# -- human commands ----------------------------------------------------------------------------------
def _entry() -> OrderIntent:
    return OrderIntent("e", "X", IntentKind.ENTRY, Side.BUY, 0, 2, "t", 100.0, 2.0, None, Exits())


def test_pause_kill_and_resume_move_the_mode_and_record_spans():
    ts = pd.Timestamp("2021-01-04", tz="UTC").value + DAY * np.arange(8, dtype=np.int64)
    rm = RiskManager(RiskLimits.minimal(), market(ts), START)
    rm.command("pause", "lunch", 1)
    assert (rm.state.mode, rm.state.mode_reason) == ("paused", "lunch")
    assert rm.check(_entry(), INST, 2, 2, 1.0).rules == ("pause",)
    rm.command("pause", "again", 2)  # already paused: the first reason stands
    assert rm.state.mode_reason == "lunch"
    rm.command("kill", "", 3)
    assert (rm.state.mode, rm.state.mode_reason) == ("killed", "no reason given")
    assert rm.check(_entry(), INST, 3, 3, 1.0).rules == ("kill",)
    rm.command("pause", "", 4)  # a kill is not downgraded to a pause
    assert rm.state.mode == "killed"
    rm.command("resume", "", 5)
    assert rm.state.mode == "running" and rm.check(_entry(), INST, 5, 5, 1.0).status is VerdictStatus.APPROVED
    assert rm.spans == [Span("paused", 1, 3, "lunch"), Span("killed", 3, 5, "no reason given")]
    assert [e.kind for e in rm.events] == ["pause", "pause", "kill", "pause", "resume"]


def test_close_all_changes_no_mode_and_an_unknown_command_is_refused():
    ts = pd.Timestamp("2021-01-04", tz="UTC").value + DAY * np.arange(3, dtype=np.int64)
    rm = RiskManager(RiskLimits.minimal(), market(ts), START)
    ev = rm.command("close_all", "", 1)
    assert (ev.kind, ev.i, rm.state.mode, rm.spans) == ("close_all", 1, "running", [])
    with pytest.raises(ValueError, match="unknown risk command 'halt'"):
        rm.command("halt", "", 1)


@settings(max_examples=100, deadline=None)
@given(actions=st.lists(st.sampled_from(["pause", "resume", "close_all", "kill"]), max_size=12))
def test_the_mode_follows_the_command_state_machine(actions):
    ts = pd.Timestamp("2021-01-04", tz="UTC").value + DAY * np.arange(len(actions) + 1, dtype=np.int64)
    rm = RiskManager(RiskLimits.minimal(), market(ts), START)
    mode, spans = "running", []
    for i, action in enumerate(actions):
        rm.command(action, "", i)
        new = {"pause": "paused" if mode == "running" else mode, "kill": "killed", "resume": "running"}
        after = new.get(action, mode)
        if after != mode:
            if spans and spans[-1][2] is None:
                spans[-1] = (spans[-1][0], spans[-1][1], i)
            if after != "running":
                spans.append((after, i, None))
            mode = after
        assert rm.state.mode == mode
    assert [(s.kind, s.start, s.end) for s in rm.spans] == spans
    assert [e.kind for e in rm.events] == actions


def test_a_restart_restores_the_mode_and_the_halt_from_a_snapshot():
    ts = pd.Timestamp("2021-01-04", tz="UTC").value + DAY * np.arange(3, dtype=np.int64)
    rm = RiskManager(RiskLimits.minimal(max_drawdown_pct=10.0), market(ts), START)
    rm.observe(0, 85_000.0)
    rm.command("pause", "investigating", 1)
    again = RiskManager(RiskLimits.minimal(max_drawdown_pct=10.0), market(ts), START)
    again.restore(rm.snapshot(), 0)
    st_ = again.state
    assert (st_.mode, st_.mode_reason, st_.halted) == ("paused", "investigating", True)
    assert st_.halt_reason == rm.state.halt_reason


# -- correlation with the held book ------------------------------------------------------------------
def test_the_correlation_is_the_highest_direction_adjusted_one_with_a_held_position():
    # 5 daily symbols (A and B share a factor, C is B inverted), 30 warm-up bars before the start;
    # checked against np.corrcoef on each pair's log returns over the entry symbol's window
    rng = np.random.default_rng(9)
    n, syms = 150, ["A", "B", "C", "D", "E"]
    factor = rng.normal(0, 0.01, n)
    rets = {"A": factor + rng.normal(0, 0.004, n), "B": factor + rng.normal(0, 0.006, n)}
    rets["C"] = -rets["B"] + rng.normal(0, 0.002, n)
    rets |= {s: rng.normal(0, 0.01, n) for s in ("D", "E")}
    t0 = pd.Timestamp("2021-01-04", tz="UTC").value
    ts = t0 + DAY * np.arange(n, dtype=np.int64)
    arrays = {}
    for s in syms:
        c = 100 * np.exp(np.cumsum(rets[s]))
        arrays[s] = {"ts": ts, "open": c, "high": c, "low": c, "close": c, "volume": np.ones(n)}
    insts = {s: Instrument(s, AssetClass.CRYPTO, "USD", Calendar.ALWAYS, 0.01, 1.0) for s in syms}
    md = market_from_arrays(arrays, insts, syms, start_ns=int(ts[30]))
    rm = RiskManager(RiskLimits(correlation_window=60), md, START)
    logc = {s: np.log(arrays[s]["close"]) for s in syms}
    for held in ({"B": 5_000.0, "C": 3_000.0, "D": -2_000.0}, {"A": 1.0, "E": 0.0}, {"D": -1.0}):
        rm.set_book(dict(held), START)
        for sym in syms:
            for k in (40, 59, 60, 75, 91, 120, 149):
                for sign in (1, -1):
                    got = rm._correlation(sym, k, sign)
                    window = np.arange(max(k - 60, 30), k + 1)  # the symbol's live bars only
                    best, best_sym = -np.inf, ""
                    for other, usd in held.items():
                        if other == sym or not usd or k < 60 or len(window) < 32:  # too few bars
                            continue
                        ra, rb = np.diff(logc[sym][window]), np.diff(logc[other][window])
                        eff = np.corrcoef(ra, rb)[0, 1] * np.sign(usd) * sign
                        if eff > best:
                            best, best_sym = eff, other
                    if best_sym:
                        assert got[1] == best_sym and got[0] == pytest.approx(best, abs=1e-12)
                    else:
                        assert np.isnan(got[0]) and got[1] == ""
