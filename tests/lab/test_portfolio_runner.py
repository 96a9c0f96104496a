"""The portfolio runner (hflite.lab.portfolio): allocation methods on small returns checked by hand, the
walk-forward (no look-ahead) property of the weights, the selection rule cutting and restoring a decayed
sleeve, the composite strategy's sizes and cuts, config errors, and ``hflite portfolio`` end to end on the
embedded sample."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hflite.cli import app
from hflite.config import ConfigError, load_settings
from hflite.domain.signal import Exits
from hflite.lab import portfolio_weights as pw
from hflite.lab.portfolio import (
    PortfolioStrategy,
    load_portfolio_settings,
    sizing_scale,
)
from hflite.lab.portfolio_config import PortfolioConfig, SelectionConfig
from hflite.lab.portfolio_weights import (
    Rebalance,
    allocate,
    check_sleeve,
    daily_table,
    rebalance_at,
    rebalance_rows,
    schedule,
    weekday_calendar,
    weights_at,
)
from hflite.strategy.base import BarArrays
from tests.conftest import REPO

runner = CliRunner()
SAMPLE = REPO / "configs" / "portfolio.toml"


def _cfg(**over: object) -> PortfolioConfig:
    base: dict[str, object] = {
        "sleeve": [
            {"name": "a", "symbols": ["SPY"], "strategy": {"name": "trend", "fast": 5, "slow": 20}},
            {"name": "b", "symbols": ["BTC-USD"], "strategy": {"name": "breakout"}},
            {"name": "c", "symbols": ["EURUSD"], "strategy": {"name": "mean_reversion"}},
        ]
    }
    base.update(over)
    return PortfolioConfig.model_validate(base)


def _returns(n: int, vols: list[float], seed: int = 1, drift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(drift, vols, (n, len(vols)))


# -- allocation methods --------------------------------------------------------------------------------


def test_equal_weights_are_one_over_n():
    w, note = allocate("equal", _returns(50, [0.01, 0.02, 0.03]))
    assert w.tolist() == pytest.approx([1 / 3] * 3)
    assert note == "equal"


def test_inverse_vol_weights_by_hand():
    # column b swings twice as far as a: std ratio exactly 1:2, so weights (1/1):(1/2) = 2/3, 1/3
    a = np.array([0.01, -0.01, 0.01, -0.01, 0.01, -0.01])
    r = np.column_stack([a, 2 * a])
    w, _ = allocate("inverse_vol", r)
    assert w.tolist() == pytest.approx([2 / 3, 1 / 3])


def test_vol_target_scales_inverse_vol_down_to_the_target_by_hand():
    a = np.array([0.01, -0.01, 0.01, -0.01, 0.01, -0.01])
    r = np.column_stack([a, 2 * a])
    # inverse-vol weights 2/3, 1/3; the account trades each at N * w: 4/3 a + 2/3 (2a) = 8/3 a
    sd = float(np.std(8 / 3 * a, ddof=1))
    predicted = sd * math.sqrt(pw.WEEKDAYS_PER_YEAR) * 100
    w, note = allocate("vol_target", r, target_vol_pct=10.0)
    scale = 10.0 / predicted
    assert scale < 1
    assert w.tolist() == pytest.approx([2 / 3 * scale, 1 / 3 * scale])
    assert f"predicted {predicted:.1f}%" in note


def test_vol_target_never_scales_up():
    r = _returns(100, [0.0001, 0.0002])  # a tiny volatility: far below any target
    w, _ = allocate("vol_target", r, target_vol_pct=50.0)
    inv, _ = allocate("inverse_vol", r)
    assert w.tolist() == pytest.approx(inv.tolist())
    assert w.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["risk_parity", "hrp", "mean_variance"])
def test_skfolio_methods_give_a_long_only_budget(method):
    r = _returns(250, [0.005, 0.02], seed=3, drift=0.0005)
    w, note = allocate(method, r)
    assert w.sum() == pytest.approx(1.0)
    assert (w >= 0).all()
    assert "failed" not in note


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("risk_parity", [4 / 7, 2 / 7, 1 / 7]),  # equal risk contributions = inverse vol (4:2:1)
        ("hrp", [16 / 21, 4 / 21, 1 / 21]),  # bisection by inverse variance (16:4:1)
    ],
)
def test_risk_based_methods_give_the_lower_vol_sleeve_more(method, expected):
    # uncorrelated sleeves with volatilities 1:2:4, so the textbook answers hold up to sampling noise
    # and the covariance shrinkage
    r = _returns(250, [0.005, 0.01, 0.02], seed=5)
    w, _ = allocate(method, r)
    assert (w > 0).all()
    assert w[0] > w[1] > w[2]
    assert w.tolist() == pytest.approx(expected, abs=0.03)


def test_mean_variance_with_no_positive_mean_falls_back_to_minimum_variance():
    r = _returns(250, [0.005, 0.02], seed=3, drift=-0.01)
    w, note = allocate("mean_variance", r)
    assert "minimum variance" in note
    assert w[0] > w[1]
    assert w.sum() == pytest.approx(1.0)


def test_a_flat_sleeve_keeps_its_equal_share_and_the_method_splits_the_rest():
    r = _returns(60, [0.01, 0.02, 0.0])
    r[:, 2] = 0.0  # never traded
    w, note = allocate("inverse_vol", r)
    assert w[2] == pytest.approx(1 / 3)
    sd = r[:, :2].std(axis=0, ddof=1)
    inv = (1 / sd) / (1 / sd).sum()
    assert w[:2].tolist() == pytest.approx((inv * 2 / 3).tolist())
    assert "1 flat sleeve at 1/3" in note


def test_a_failing_solver_falls_back_to_inverse_vol(monkeypatch):
    def boom(method, r):
        raise RuntimeError("solver gave up")

    monkeypatch.setattr(pw, "_skfolio", boom)
    r = _returns(80, [0.01, 0.02])
    w, note = allocate("hrp", r)
    inv, _ = allocate("inverse_vol", r)
    assert w.tolist() == pytest.approx(inv.tolist())
    assert "hrp failed (RuntimeError: solver gave up): inverse_vol instead" in note


def test_solver_dust_becomes_no_weight(monkeypatch):
    monkeypatch.setattr(pw, "_skfolio", lambda method, r: (np.array([1e-9, 0.6, 0.4]), "mean_variance"))
    w, _ = allocate("mean_variance", _returns(80, [0.01, 0.02, 0.03]))
    assert w.tolist() == pytest.approx([0.0, 0.6, 0.4])
    assert w[0] == 0.0


# -- calendar and schedule -------------------------------------------------------------------------------


def test_daily_table_takes_the_last_point_before_each_midnight():
    days = weekday_calendar(pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-03", tz="UTC"))
    curve = pd.Series(
        [101.0, 102.0, 99.0],
        index=pd.DatetimeIndex(["2024-01-01 21:00", "2024-01-02 00:00", "2024-01-03 21:00"], tz="UTC"),
    )
    eq, ret = daily_table({"s": curve}, days, 100.0)
    # Jan 1: 101 (21:00); Jan 2: the midnight point belongs to Jan 2 -> 102; Jan 3: 99
    assert eq[:, 0].tolist() == [101.0, 102.0, 99.0]
    assert ret[:, 0].tolist() == pytest.approx([0.01, 102 / 101 - 1, 99 / 102 - 1])


def test_rebalance_rows_are_the_last_weekday_of_each_period_but_the_last():
    days = weekday_calendar(pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-04-10", tz="UTC"))
    monthly = [f"{days[r]:%Y-%m-%d}" for r in rebalance_rows(days, "monthly")]
    assert monthly == ["2024-01-31", "2024-02-29", "2024-03-29"]
    quarterly = [f"{days[r]:%Y-%m-%d}" for r in rebalance_rows(days, "quarterly")]
    assert quarterly == ["2024-03-29"]
    weekly = rebalance_rows(days, "weekly")
    assert all(days[r].day_of_week == 4 for r in weekly)  # Fridays (no holidays in a weekday calendar)
    new_year = weekday_calendar(pd.Timestamp("2024-12-20", tz="UTC"), pd.Timestamp("2025-01-10", tz="UTC"))
    # Mon 2024-12-30 .. Fri 2025-01-03 is one ISO week: no rebalance on New Year's Eve
    assert [f"{new_year[r]:%Y-%m-%d}" for r in rebalance_rows(new_year, "weekly")] == [
        "2024-12-20",
        "2024-12-27",
        "2025-01-03",
    ]


def test_weights_apply_from_the_first_instant_after_the_rebalance_day():
    day = pd.Timestamp("2024-01-31", tz="UTC")
    eff = int(day.value) + 86_400 * 10**9
    plan = [
        Rebalance(None, np.iinfo(np.int64).min, {"a": 0.5}, {"a": 0.5}, "equal", 0),
        Rebalance(day, eff, {"a": 0.9}, {"a": 0.9}, "hrp", 20),
    ]
    ts = np.array([eff - 1, eff, eff + 1], dtype=np.int64)
    assert weights_at(plan, "a", ts).tolist() == [0.5, 0.9, 0.9]


def _table(n: int, seed: int) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    days = weekday_calendar(pd.Timestamp("2020-01-01", tz="UTC"), pd.Timestamp("2022-12-30", tz="UTC"))[:n]
    rets = _returns(n, [0.004, 0.008, 0.015], seed=seed, drift=0.0003)
    eq = 100_000 * np.cumprod(1 + rets, axis=0)
    return days, eq, rets


@settings(max_examples=25, deadline=None)
@given(
    method=st.sampled_from(["equal", "inverse_vol", "vol_target", "risk_parity", "hrp", "mean_variance"]),
    row=st.integers(min_value=5, max_value=400),
    seed=st.integers(min_value=0, max_value=10_000),
    shock=st.floats(min_value=-0.5, max_value=0.5, allow_nan=False).filter(lambda x: abs(x) > 1e-3),
)
def test_weights_at_a_rebalance_never_read_later_returns(method, row, seed, shock):
    """Perturbing every return after day t (and the equity it implies) leaves the weights set at t alone."""
    days, eq, rets = _table(420, seed)
    cfg = _cfg(
        allocation=method,
        lookback_days=60,
        min_history_days=20,
        selection={"window_days": 40, "min_sharpe": 0.5, "max_dd_pct": 3.0},
    )
    names = ["a", "b", "c"]
    before = rebalance_at(names, days, eq, rets, row, cfg, 100_000.0)
    rets2 = rets.copy()
    rets2[row + 1 :] += shock * np.random.default_rng(seed).random(rets2[row + 1 :].shape)
    eq2 = eq.copy()
    eq2[row + 1 :] = eq[row] * np.cumprod(1 + rets2[row + 1 :], axis=0)
    after = rebalance_at(names, days, eq2, rets2, row, cfg, 100_000.0)
    assert after.weights == before.weights
    assert after.raw == before.raw
    assert after.cut == before.cut


def test_the_schedule_of_a_truncated_history_is_a_prefix_of_the_full_one():
    days, eq, rets = _table(500, 11)
    cfg = _cfg(allocation="hrp", lookback_days=60, min_history_days=20, selection={"window_days": 40})
    full = schedule(["a", "b", "c"], days, eq, rets, cfg, 100_000.0)
    part = schedule(["a", "b", "c"], days[:300], eq[:300], rets[:300], cfg, 100_000.0)
    assert len(part) > 5
    for x, y in zip(part, full, strict=False):
        assert (x.day, x.weights, x.cut) == (y.day, y.weights, y.cut)


def test_equal_weights_until_min_history():
    days, eq, rets = _table(200, 2)
    cfg = _cfg(allocation="inverse_vol", lookback_days=60, min_history_days=50)
    plan = schedule(["a", "b", "c"], days, eq, rets, cfg, 100_000.0)
    early = [r for r in plan[1:] if r.history < 50 and r.method.startswith("equal")]
    assert early
    assert all(r.weights == dict.fromkeys("abc", 1 / 3) for r in early)
    late = [r for r in plan[1:] if r.method == "inverse_vol"]
    assert late and all(r.history == 60 for r in late)  # only the lookback window is read


# -- the selection rule ----------------------------------------------------------------------------------


def test_check_sleeve_sharpe_and_drawdown_by_hand():
    sel = SelectionConfig(window_days=20, min_sharpe=0.0, max_dd_pct=15.0)
    r = np.array([0.01, -0.02, 0.01, -0.02])
    c = check_sleeve(r, np.array([101.0, 98.98, 99.97, 97.97]), 100.0, sel)
    expected = r.mean() / r.std(ddof=1) * math.sqrt(pw.WEEKDAYS_PER_YEAR)
    assert c.sharpe == pytest.approx(expected)
    assert c.drawdown_pct == pytest.approx((1 - 97.97 / 101.0) * 100)
    assert c.decayed
    assert c.why == f"trailing 4-day Sharpe {expected:.2f} < 0"
    deep = check_sleeve(np.array([0.1, -0.2]), np.array([110.0, 88.0]), 100.0, sel)
    assert "drawdown 20.0% from its 2-day peak > 15%" in deep.why


def test_a_flat_sleeve_is_not_cut():
    sel = SelectionConfig(window_days=20, min_sharpe=0.5)
    c = check_sleeve(np.zeros(30), np.full(30, 100.0), 100.0, sel)
    assert math.isnan(c.sharpe)
    assert not c.decayed


def _decaying_table() -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """Sleeve b earns for a year, loses steadily for half a year, then earns again."""
    days = weekday_calendar(pd.Timestamp("2020-01-01", tz="UTC"), pd.Timestamp("2023-12-29", tz="UTC"))
    n = len(days)
    rng = np.random.default_rng(4)
    rets = rng.normal(0.001, 0.002, (n, 3))  # a trailing Sharpe near 8: never negative by chance
    rets[260:390, 1] = rng.normal(-0.003, 0.002, 130)
    return days, 100_000 * np.cumprod(1 + rets, axis=0), rets


def test_selection_cuts_a_decayed_sleeve_and_restores_it():
    days, eq, rets = _decaying_table()
    cfg = _cfg(
        allocation="equal",
        lookback_days=60,
        min_history_days=20,
        selection={"window_days": 63, "min_sharpe": 0.0, "max_dd_pct": 50.0},
    )
    plan = schedule(["a", "b", "c"], days, eq, rets, cfg, 100_000.0)
    cut = [r for r in plan if "b" in r.cut]
    assert cut, "the losing stretch must cut sleeve b"
    first = cut[0]
    assert days[260] < first.day <= days[390]
    assert first.weights["b"] == 0.0
    assert first.weights["a"] == pytest.approx(0.5) and first.weights["c"] == pytest.approx(0.5)
    assert first.raw["b"] == pytest.approx(1 / 3)
    assert "Sharpe" in first.cut["b"] and "< 0" in first.cut["b"]
    back = [r for r in plan if "b" in r.restored]
    assert back and back[0].day > first.day
    assert back[0].restored["b"].startswith("recovered: trailing Sharpe")
    assert back[0].weights["b"] == pytest.approx(1 / 3)
    assert plan[-1].weights["b"] == pytest.approx(1 / 3)


def test_a_partial_cut_without_redistribution_leaves_cash():
    days, eq, rets = _decaying_table()
    cfg = _cfg(
        allocation="equal",
        lookback_days=60,
        min_history_days=20,
        redistribute=False,
        selection={"window_days": 63, "min_sharpe": 0.0, "max_dd_pct": 50.0, "cut": 0.5},
    )
    plan = schedule(["a", "b", "c"], days, eq, rets, cfg, 100_000.0)
    first = next(r for r in plan if "b" in r.cut)
    assert first.weights == pytest.approx({"a": 1 / 3, "b": 1 / 6, "c": 1 / 3})


# -- the composite strategy ------------------------------------------------------------------------------


def _bars(symbol: str, n: int = 300, start: str = "2024-01-01") -> BarArrays:
    rng = np.random.default_rng(9)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    ts = pd.date_range(start, periods=n, freq="D", tz="UTC").as_unit("ns").asi8 + 21 * 3600 * 10**9
    return BarArrays(close, close * 1.01, close * 0.99, close, np.full(n, 1e6), ts, symbol)


def test_the_composite_sizes_entries_by_weight_and_closes_a_cut_sleeve():
    cfg = _cfg()
    bars = _bars("SPY")
    cut_day = pd.Timestamp("2024-03-01", tz="UTC")
    restore_day = pd.Timestamp("2024-04-01", tz="UTC")
    day_ns = 86_400 * 10**9
    plan = [
        Rebalance(None, np.iinfo(np.int64).min, {}, dict.fromkeys("abc", 1 / 3), "equal", 0),
        Rebalance(cut_day, cut_day.value + day_ns, {}, {"a": 0.0, "b": 0.5, "c": 0.5}, "hrp", 40,
                  cut={"a": "trailing 40-day Sharpe -1.00 < 0"}),
        Rebalance(restore_day, restore_day.value + day_ns, {}, {"a": 0.6, "b": 0.2, "c": 0.2}, "hrp", 60),
    ]  # fmt: skip
    strat = PortfolioStrategy(cfg, plan, scale=2.0)
    sig = strat.signals(bars)
    w = weights_at(plan, "a", bars.ts)
    assert sig.size.tolist() == pytest.approx(np.minimum(1.0, 3 * w / 2.0).tolist())
    assert sig.values["sleeve_weight"].tolist() == w.tolist()
    cut = np.flatnonzero(w == 0)
    assert len(cut) > 0
    k0 = int(cut[0])
    assert bars.ts[k0] >= cut_day.value + day_ns > bars.ts[k0 - 1]  # the first bar after the cut day
    assert sig.target[k0] == 0.0
    reason = sig.reason(k0)
    assert reason == (
        "sleeve a: at weight 0 from the 2024-03-01 rebalance "
        "(selection: trailing 40-day Sharpe -1.00 < 0): go flat"
    )
    assert not np.isin(sig.target[cut[1:]], (1.0, -1.0)).any()  # no entries while cut
    plain = strat.strategies["a"].signals(bars)
    after = np.flatnonzero(w > 0.5)
    assert np.array_equal(sig.target[after], plain.target[after], equal_nan=True)
    entries = [k for k in range(len(bars)) if sig.target[k] == 1.0]
    assert entries and all(sig.reason(k).startswith("sleeve a: SMA(5)") for k in entries)


def test_a_sleeve_the_method_gives_no_weight_is_sent_flat_too():
    day = pd.Timestamp("2024-02-01", tz="UTC")
    plan = [
        Rebalance(None, np.iinfo(np.int64).min, {}, dict.fromkeys("abc", 1 / 3), "equal", 0),
        Rebalance(day, day.value + 86_400 * 10**9, {}, {"a": 0.0, "b": 0.7, "c": 0.3}, "mean_variance", 30),
    ]
    bars = _bars("SPY")
    sig = PortfolioStrategy(_cfg(), plan, scale=2.0).signals(bars)
    k0 = int(np.flatnonzero(sig.values["sleeve_weight"] == 0)[0])
    assert sig.target[k0] == 0.0
    assert sig.reason(k0) == (
        "sleeve a: at weight 0 from the 2024-02-01 rebalance (mean_variance gave it no weight): go flat"
    )


def test_sizing_scale_respects_the_risk_ceiling():
    base = {
        "run": {"symbols": ["SPY", "BTC-USD", "EURUSD"], "start": "2020-01-01", "end": "2021-01-01"},
        "portfolio": _cfg().model_dump(),
    }

    def scale(**sections: object) -> float:
        return sizing_scale(load_settings(None, {**base, **sections}, trades=False))

    assert scale(risk={"risk_pct": 0.5}) == 2.0  # max_scale: 0.5% x 2 = 1%, the config's ceiling
    assert scale(risk={"risk_pct": 0.75}) == pytest.approx(1 / 0.75)  # 1% per trade at most
    assert scale(risk={"risk_pct": 1.0}) == 1.0
    assert scale(risk={"risk_pct": 0.4}) == 2.0
    assert scale(phase={"name": "pro"}, risk={"risk_pct": 0.4}) == pytest.approx(0.5 / 0.4)  # pro: 0.5% max
    assert scale(risk={"sizing": "percent_equity", "percent_equity": 60}) == pytest.approx(100 / 60)


# -- config ------------------------------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


_RUN = '[run]\nstart = "2019-01-02"\nend = "2020-12-31"\n'
_SLEEVES = """
[[portfolio.sleeve]]
name = "etf"
symbols = ["SPY", "TLT"]
strategy = { name = "trend", fast = 20, slow = 100 }

[[portfolio.sleeve]]
name = "crypto"
symbols = ["BTC-USD"]
strategy = { name = "breakout" }
"""


def test_the_sample_config_loads_with_symbols_derived_from_the_sleeves():
    settings, warnings = load_portfolio_settings(SAMPLE)
    assert settings.portfolio is not None
    assert settings.run.symbols == settings.portfolio.symbols()
    assert len(settings.portfolio.sleeve) >= 3
    assert settings.portfolio.allocation == "hrp"
    assert settings.portfolio.rebalance == "monthly"
    assert settings.portfolio.selection.enabled
    assert warnings == []


def test_a_symbol_in_two_sleeves_is_an_error_naming_both(tmp_path):
    text = _RUN + "[portfolio]\n" + _SLEEVES.replace('["BTC-USD"]', '["BTC-USD", "TLT"]')
    with pytest.raises(ConfigError) as exc:
        load_portfolio_settings(_write(tmp_path, text))
    assert str(exc.value) == (
        "config error: portfolio.sleeve: TLT is in sleeves 'etf' and 'crypto': a symbol may be in one sleeve "
        "only (the account holds one position per symbol)"
    )


def test_an_unknown_allocation_method_is_an_error(tmp_path):
    text = _RUN + '[portfolio]\nallocation = "magic"\n' + _SLEEVES
    with pytest.raises(ConfigError, match=r"config error: portfolio\.allocation: Input should be 'equal'"):
        load_portfolio_settings(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        ('{ name = "ai_ensemble" }', "ai_ensemble needs the AI brain"),
        (
            '{ name = "nope" }',
            "strategy name must be one of trend, breakout, mean_reversion, tsmom, xsmom, got 'nope'",
        ),
        ('{ name = "trend", fast = 100, slow = 20 }', "sleeve 'etf': trend: fast (100) must be smaller"),
        ('{ name = "trend", fats = 10 }', "sleeve 'etf': trend: fats: Extra inputs are not permitted"),
    ],
)
def test_a_bad_sleeve_strategy_is_an_error_naming_the_sleeve(tmp_path, strategy, message):
    text = _RUN + "[portfolio]\n" + _SLEEVES.replace('{ name = "trend", fast = 20, slow = 100 }', strategy)
    with pytest.raises(ConfigError, match="config error: portfolio.sleeve.0.strategy") as exc:
        load_portfolio_settings(_write(tmp_path, text))
    assert message in str(exc.value)


def test_run_symbols_must_match_the_sleeves_when_given(tmp_path):
    text = _RUN.replace("[run]\n", '[run]\nsymbols = ["SPY", "GLD"]\n') + "[portfolio]\n" + _SLEEVES
    with pytest.raises(ConfigError) as exc:
        load_portfolio_settings(_write(tmp_path, text))
    assert "config error: run.symbols: a portfolio trades exactly its sleeves' symbols" in str(exc.value)
    assert "not in run.symbols: TLT, BTC-USD; in no sleeve: GLD" in str(exc.value)
    same = _RUN.replace("[run]\n", '[run]\nsymbols = "BTC-USD,SPY,TLT"\n') + "[portfolio]\n" + _SLEEVES
    settings, _ = load_portfolio_settings(_write(tmp_path, same))
    assert settings.run.symbols == ["SPY", "TLT", "BTC-USD"]


def test_a_strategy_section_is_ignored_with_a_warning(tmp_path):
    text = _RUN + '[strategy]\nname = "breakout"\n[portfolio]\n' + _SLEEVES
    _, warnings = load_portfolio_settings(_write(tmp_path, text))
    assert warnings == ["config: [strategy] is not used by a portfolio: each sleeve names its own strategy"]


def test_a_missing_portfolio_section_and_min_history_above_lookback_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"config error: portfolio: missing: add a \[portfolio\] section"):
        load_portfolio_settings(_write(tmp_path, _RUN))
    text = _RUN + "[portfolio]\nlookback_days = 60\nmin_history_days = 80\n" + _SLEEVES
    with pytest.raises(ConfigError, match="config error: portfolio.min_history_days: 80 is more than"):
        load_portfolio_settings(_write(tmp_path, text))


# -- end to end ----------------------------------------------------------------------------------------------


def test_hflite_portfolio_runs_the_sample_config_and_writes_the_report(tmp_path, sample_store):
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "portfolio",
            "--config",
            str(SAMPLE),
            "--set",
            f"data.dir={sample_store.root}",
            "--set",
            "run.start=2019-01-02",
            "--set",
            "run.end=2021-12-31",
            "--out",
            str(out),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "hrp weights at the last rebalance (2021-11-30)" in result.output
    assert "combined" in result.output and "etf_trend (alone)" in result.output
    assert f"Portfolio: {out / 'portfolio.html'}" in result.output
    for name in ("report.html", "trades.csv", "verdicts.csv", "portfolio.html", "portfolio_rebalances.csv"):
        assert (out / name).is_file(), name
    assert '<a href="portfolio.html"><b>Portfolio</b></a>' in (out / "report.html").read_text()
    page = (out / "portfolio.html").read_text()
    for section in ("Weights over time", "Rebalances", "Sleeves", "Equity", "How it works"):
        assert f"<h2>{section}</h2>" in page

    rebs = pd.read_csv(out / "portfolio_rebalances.csv")
    sleeves = ["etf_trend", "crypto_breakout", "fx_meanrev"]
    assert sorted(set(rebs["sleeve"])) == sorted(sleeves)
    assert len(rebs) == 3 * (
        1 + 35
    )  # the initial allocation and 35 month-ends (the last month's is not used)
    totals = rebs.groupby("day", dropna=False)["weight"].sum()
    assert ((totals > 1 - 1e-9) | (totals == 0)).all() and (totals < 1 + 1e-9).all()
    assert (rebs.loc[rebs["status"] == "cut", "weight"] == 0).all()
    assert rebs.loc[rebs["status"] == "cut", "reason"].str.contains("Sharpe|drawdown").all()

    summary = json.loads((out / "portfolio.json").read_text())
    assert summary["scale"] == 2.0 and summary["gate_risk"] == 1.0

    # one account: every sleeve's symbols in the one run, each decision naming its sleeve and sized by
    # min(1, N w / S) of the gate's risk
    verdicts = pd.read_csv(out / "verdicts.csv")
    entries = verdicts[verdicts["kind"] == "entry"]
    assert set(entries["symbol"]) >= {"SPY", "BTC-USD", "EURUSD"}
    assert entries["intent_reason"].str.match(r"^sleeve (etf_trend|crypto_breakout|fx_meanrev): ").all()
    owner = {"EURUSD": "fx_meanrev", "USDJPY": "fx_meanrev", "BTC-USD": "crypto_breakout"}
    owner |= {"ETH-USD": "crypto_breakout"} | dict.fromkeys(
        ["SPY", "QQQ", "TLT", "GLD", "XLE", "EFA"], "etf_trend"
    )
    plan = rebs.assign(effective_from=pd.to_datetime(rebs["effective_from"], utc=True))
    for row in entries.itertuples():
        values = json.loads(row.values)
        sleeve = owner[row.symbol]
        # the weight in force is the last rebalance's that took effect at or before the decision
        mine = plan[(plan["sleeve"] == sleeve)]
        started = mine[mine["effective_from"].isna() | (mine["effective_from"] <= pd.Timestamp(row.ts))]
        assert values["sleeve_weight"] == pytest.approx(started["weight"].iloc[-1])
        mult = min(1.0, 3 * values["sleeve_weight"] / 2.0)
        assert values["size_multiplier"] == pytest.approx(mult)
        assert row.intent_reason.startswith(f"sleeve {sleeve}: ")
        if mult < 1 and row.reason.startswith("risk "):  # sized (not rejected by a gate before sizing)
            assert f"x{mult:.2f} conviction" in row.reason
    assert (entries["reason"].str.contains("conviction")).sum() > 10
    config = json.loads((out / "config.json").read_text())
    assert config["strategy"] == {"name": "portfolio", "sleeves": sleeves}
    assert config["run"]["symbols"] == ["SPY", "QQQ", "TLT", "GLD", "XLE", "EFA", "BTC-USD", "ETH-USD",
                                        "EURUSD", "USDJPY"]  # fmt: skip


def test_hflite_portfolio_reports_a_config_error_in_one_line(tmp_path):
    text = _RUN + "[portfolio]\n" + _SLEEVES.replace('["BTC-USD"]', '["BTC-USD", "SPY"]')
    result = runner.invoke(app, ["portfolio", "--config", str(_write(tmp_path, text))])
    assert result.exit_code == 2
    assert "error: config error: portfolio.sleeve: SPY is in sleeves 'etf' and 'crypto'" in result.output


def test_hflite_portfolio_help_has_an_example():
    result = runner.invoke(app, ["portfolio", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Example: hflite portfolio --config configs/portfolio.toml" in result.output
    assert "[portfolio.selection]" in result.output


def test_the_composite_never_uses_an_unknown_symbol():
    strat = PortfolioStrategy(_cfg(), [Rebalance(None, 0, {}, dict.fromkeys("abc", 1 / 3), "equal", 0)], 2.0)
    with pytest.raises(KeyError):
        strat.signals(_bars("QQQ"))
    assert strat.warmup() == max(s.warmup() for s in strat.strategies.values())
    assert isinstance(strat.strategies["a"].signals(_bars("SPY")).exits, Exits)


def test_an_xsmom_sleeve_ranks_only_its_own_symbols(sample_store):
    """In the combined run a cross-sectional sleeve sees the market with only its own symbols traded, so
    its targets are those of its run alone (not a ranking that includes another sleeve's bitcoin)."""
    from hflite.engine.run import prepare
    from hflite.engine.signals import compute_signals
    from tests.conftest import make_settings

    mom = ["SPY", "QQQ", "TLT", "GLD"]
    cfg = _cfg(
        sleeve=[
            {"name": "mom", "symbols": mom, "strategy": {"name": "xsmom", "top_n": 1}},
            {"name": "btc", "symbols": ["BTC-USD"], "strategy": {"name": "tsmom"}},
        ]
    )
    run = {"start": "2019-01-02", "end": "2021-12-31", "benchmarks": ["SPY"]}
    strategy = {"name": "xsmom", "top_n": 1}
    everything = prepare(
        make_settings(sample_store, run={**run, "symbols": [*mom, "BTC-USD"]}, strategy=strategy),
        sample_store,
    )
    alone = prepare(make_settings(sample_store, run={**run, "symbols": mom}, strategy=strategy), sample_store)
    plan = [Rebalance(None, np.iinfo(np.int64).min, {}, {"mom": 0.5, "btc": 0.5}, "equal", 0)]
    combined = PortfolioStrategy(cfg, plan, scale=1.0)
    combined.attach_market(everything.md)
    want = compute_signals(alone.strategy, alone.md)
    for sym in mom:
        got = combined.signals(everything.md.bars[sym].arrays())
        assert np.array_equal(got.target, want[sym].target, equal_nan=True), sym
        assert (got.target == 1.0).any()


@pytest.mark.parametrize("command", ["backtest", "validate", "optimize"])
def test_a_portfolio_config_given_to_a_single_strategy_command_says_which_command_runs_it(command):
    args = [command, "--config", str(REPO / "configs" / "portfolio.toml")]
    res = CliRunner().invoke(app, [*args, "-p", "fast=5..9"] if command == "optimize" else args)
    assert res.exit_code == 2
    assert "this is a portfolio config" in res.output and "hflite portfolio --config" in res.output
