"""`hflite drift`: a paper or live period replayed through the backtester, the P&L difference taken
apart into parts that sum to it, and the slippage model fitted to the run's own fills."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hflite.cli import app
from hflite.config import load_settings
from hflite.execution.drift import PARTS, Marks, SideFill, attribute, measure, nnls, side_pnl
from tests.test_execution_quality import fake, paper  # noqa: F401,F811  (module fixtures: the sessions)

T1, T2 = 1_000, 2_000


def _marks(**opens: float) -> Marks:
    return Marks(
        {"X": 100.0},
        {"X": 110.0},
        {"X": 1.0},
        {"X": {T1: opens.get("t1", 100.0), T2: opens.get("t2", 100.5)}},
    )


def test_one_order_filled_late_short_and_dear_is_taken_apart_by_hand():
    marks = _marks()
    bt = [SideFill("k", "X", 1, 10.0, 100.0, 1.0, T1, 10.0)]
    live = [SideFill("k", "X", 1, 8.0, 101.0, 2.0, T2, 10.0)]
    att = attribute({}, live, {}, bt, marks)
    # live 8 * (110 - 101) - 2 = 70; backtest 10 * (110 - 100) - 1 = 99
    assert (att.live_pnl, att.backtest_pnl) == (pytest.approx(70.0), pytest.approx(99.0))
    assert att.parts["missed"] == pytest.approx(-20.0)  # 2 units short, worth 110 - 100 each
    assert att.parts["latency"] == pytest.approx(-4.0)  # filled a bar later: the open rose 0.5 on 8 units
    assert att.parts["slippage"] == pytest.approx(-4.0)  # 101 against 100 + 0.5 on 8 units
    assert att.parts["fees"] == pytest.approx(-1.0)
    assert att.parts["decisions"] == att.parts["carried"] == 0.0
    assert sum(att.parts.values()) == pytest.approx(att.difference) == pytest.approx(-29.0)


def test_a_smaller_order_is_a_different_decision_not_a_missed_fill():
    bt = [SideFill("k", "X", 1, 10.0, 100.0, 0.0, T1, 10.0)]
    live = [SideFill("k", "X", 1, 8.0, 100.0, 0.0, T1, 8.0)]  # live sized 8 and got all 8
    att = attribute({}, live, {}, bt, _marks())
    assert att.parts["decisions"] == pytest.approx(-20.0) and att.parts["missed"] == pytest.approx(0.0)


def test_orders_on_one_side_only_and_carried_positions_are_their_own_parts():
    live = [SideFill("only-live", "X", -1, 3.0, 105.0, 0.5, T2, 3.0)]
    bt = [SideFill("only-bt", "X", 1, 2.0, 100.0, 0.5, T1, 2.0)]
    att = attribute({"X": 5.0}, live, {"X": 4.0}, bt, _marks())
    assert att.parts["carried"] == pytest.approx(1.0 * (110 - 100))
    assert att.parts["decisions"] == pytest.approx((-3 * (110 - 105) - 0.5) - (2 * (110 - 100) - 0.5))
    assert sum(att.parts.values()) == pytest.approx(att.difference)


_fills = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", ""]),
        st.sampled_from([1, -1]),
        st.floats(0.01, 1e4),
        st.floats(1.0, 1e3),
        st.floats(0.0, 50.0),
        st.sampled_from([T1, T2, 3_000]),
        st.floats(0.0, 1e4),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(live=_fills, bt=_fills, lc=st.floats(-1e3, 1e3), bc=st.floats(-1e3, 1e3), end=st.floats(1.0, 1e3))
def test_the_parts_always_sum_to_the_difference(live, bt, lc, bc, end):
    marks = Marks({"X": 50.0}, {"X": end}, {"X": 0.9}, {"X": {T1: 40.0, T2: 60.0}})  # 3_000: no open known

    def side(rows, adjust):
        out, sides = [], {}
        for key, sign, qty, price, fee, ts, ordered in rows:
            if key == "" and not adjust:
                key = "z"  # adjustments are live-only
            sign = sides.setdefault(key, sign)  # an order's fills share its side
            out.append(SideFill(key, "X", sign, qty, price, fee, ts, ordered))
        return out

    lf, bf = side(live, True), side(bt, False)
    att = attribute({"X": lc}, lf, {"X": bc}, bf, marks)
    scale = 1.0 + sum(abs(f.qty) * (abs(f.price) + end) for f in lf + bf) + (abs(lc) + abs(bc)) * end
    scale += sum(abs(v) for v in att.parts.values())  # the parts' own size bounds their rounding
    assert math.isclose(sum(att.parts.values()), att.difference, abs_tol=1e-9 * scale)
    assert att.live_pnl == pytest.approx(side_pnl({"X": lc}, lf, marks), abs=1e-9 * scale)
    assert set(att.parts) == set(PARTS)


def test_nnls_keeps_coefficients_non_negative_and_exact_when_the_data_allow():
    import numpy as np

    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert nnls(a, a @ np.array([2.0, 3.0])) == pytest.approx([2.0, 3.0])
    assert nnls(a, np.array([1.0, -5.0, -4.0])).min() >= 0.0


# -- on real sessions -------------------------------------------------------------------------------
def test_a_paper_session_has_no_drift_from_its_backtest_and_its_pnl_is_its_equity_change(paper, sample_store):  # noqa: F811
    settings_, journal, out = paper
    rep = measure(settings_, journal, store=sample_store)
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in rep.attribution.parts.values())
    assert rep.attribution.live_pnl == pytest.approx(out.result.equity.iloc[-1] - 100_000.0, abs=1e-6)
    assert rep.live_fills == rep.backtest_fills == 34
    # the paper venue's fills follow the config's model, so the fit gives the config back
    assert rep.fit is not None
    assert rep.fit.bps == pytest.approx({"crypto": 5.0, "fx": 0.5}, abs=1e-6)
    assert rep.fit.range_frac == pytest.approx(0.02, abs=1e-6)


def test_drift_against_the_fake_broker_finds_its_costs_and_fits_its_model(fake, sample_store, tmp_path: Path):  # noqa: F811
    settings_, journal, out = fake
    rep = measure(settings_, journal, store=sample_store)
    att = rep.attribution
    assert att.live_pnl == pytest.approx(out.result.equity.iloc[-1] - 100_000.0, abs=1e-6)
    assert sum(att.parts.values()) == pytest.approx(att.difference, abs=1e-6)
    # pinned (checked once by hand: fees = the broker's 25 / 1 bps against the config's 10 / 0.5 bps)
    assert att.parts["fees"] == pytest.approx(-221.63, abs=0.01)
    assert att.parts["slippage"] == pytest.approx(-539.56, abs=0.01)
    assert att.parts["decisions"] == pytest.approx(-24.23, abs=0.01)  # sizes from a smaller equity
    assert att.parts["missed"] == pytest.approx(0.0, abs=1e-6) and att.parts["latency"] == 0.0
    assert rep.fit is not None
    assert rep.fit.bps == pytest.approx({"crypto": 20.0, "fx": 3.0}, abs=1e-6)  # the broker's own model
    assert rep.fit.range_frac == pytest.approx(0.05, abs=1e-6)


def test_drift_cli_writes_its_page_and_a_snippet_the_config_accepts(fake, tmp_path: Path):  # noqa: F811
    settings_, journal, _ = fake
    config = tmp_path / "c.toml"
    config.write_text(
        f"""[run]
name = "eqfake"
symbols = ["BTC-USD", "EURUSD"]
start = "2023-06-01"
end = "2024-06-28"
benchmarks = ["BTC-USD"]
[strategy]
name = "trend"
fast = 5
slow = 20
ma = "ema"
stop_atr = 2.0
[data]
dir = "{settings_.data.dir}"
[llm]
mode = "off"
"""
    )
    out = tmp_path / "drift"
    result = CliRunner().invoke(
        app,
        ["drift", "--config", str(config), "--journal", str(journal), "--out", str(out)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "slippage" in result.output and "[execution.slippage]" in result.output
    assert (out / "drift.html").is_file() and (out / "drift_orders.csv").is_file()
    snippet = tomllib.loads((out / "slippage_fit.toml").read_text())
    adopted = load_settings(config, {"execution": snippet["execution"]})
    assert adopted.execution.slippage.range_frac == pytest.approx(0.05)
    assert adopted.execution.slippage.bps["crypto"] == pytest.approx(20.0)


def test_drift_asks_for_the_config_when_the_journal_does_not_name_it(fake):  # noqa: F811
    result = CliRunner().invoke(app, ["drift", "--journal", str(fake[1])])
    assert result.exit_code != 0
    assert "give --config" in result.output
