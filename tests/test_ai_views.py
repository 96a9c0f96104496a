"""Views, ensemble, regimes and the ai_ensemble strategy's targets, on hand-checked numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hflite.ai.ensemble import EnsembleConfig, combine, learned_weights, period_starts, weights_at
from hflite.ai.regime import RegimeConfig, _forward_filter, hmm_regimes, label_at, rule_regimes
from hflite.ai.views import BANKER, asset_group, view_frame
from hflite.domain.instrument import instrument_for
from hflite.domain.order import Side
from hflite.domain.signal import Exits, IntentKind, OrderIntent
from hflite.risk.gate import RiskState, evaluate
from hflite.risk.limits import RiskLimits
from hflite.strategy.ai import hysteresis


def _index(n: int) -> pd.DatetimeIndex:
    return pd.date_range("2020-01-01 21:00", periods=n, freq="D", tz="UTC")


def test_asset_groups_follow_the_instrument() -> None:
    groups = {
        s: asset_group(instrument_for(s)) for s in ("SPY", "TLT", "GLD", "XLE", "BTC-USD", "EURUSD", "USDJPY")
    }
    assert groups == {
        "SPY": "equity",
        "TLT": "bonds",
        "GLD": "gold",
        "XLE": "energy",
        "BTC-USD": "crypto",
        "EURUSD": "fx_usd_quote",
        "USDJPY": "fx_usd_base",
    }


def test_banker_view_score_is_the_weighted_mean_of_known_signals() -> None:
    # Two known inputs: curve slope 1.0 (signal tanh(1) = 0.7616, weight 1) and the inflation trend
    # 0.5 (signal -tanh(1) = -0.7616, weight 1); everything else unknown.
    inputs = pd.DataFrame({"curve_slope": [1.0], "cpi_trend": [0.5]}, index=_index(1))
    vf = view_frame("banker", inputs, "equity")
    t = math.tanh(1.0)
    assert vf.score[0] == pytest.approx((t - t) / 2)
    assert vf.confidence[0] == pytest.approx(0.0)  # they cancel: no agreement
    inputs = pd.DataFrame({"curve_slope": [1.0], "cpi_trend": [-0.5]}, index=_index(1))
    vf = view_frame("banker", inputs, "equity")
    total = sum(abs(f.weight * f.sensitivity("equity")) for f in BANKER)
    assert vf.score[0] == pytest.approx(t)
    assert vf.confidence[0] == pytest.approx(2.0 / total)  # coverage 2/total, full agreement
    assert np.nansum(vf.contributions[0]) == pytest.approx(vf.score[0])
    assert [r[0] for r in vf.reasons(0)] == ["yield curve slope", "inflation trend"]


def test_sensitivities_flip_a_macro_factor_by_asset_group() -> None:
    inputs = pd.DataFrame({"usd_ret_63": [0.04]}, index=_index(1))  # the dollar rose 4%
    eur = view_frame("banker", inputs, "fx_usd_quote").score[0]
    jpy = view_frame("banker", inputs, "fx_usd_base").score[0]
    assert eur == pytest.approx(-math.tanh(1.0))
    assert jpy == pytest.approx(math.tanh(1.0))


def test_a_view_without_any_input_has_no_score_and_no_confidence() -> None:
    vf = view_frame("investor", pd.DataFrame(index=_index(3)), "equity")
    assert np.isnan(vf.score).all()
    assert (vf.confidence == 0).all()
    assert vf.reasons(0) == []


def test_ensemble_weights_views_by_weight_times_confidence() -> None:
    scores = np.array([[0.5, -0.5, 1.0], [np.nan, 0.2, 0.4]])
    confs = np.array([[1.0, 0.5, 0.5], [0.9, 1.0, 0.5]])
    w = np.array([0.2, 0.2, 0.6])
    score, conf = combine(scores, confs, w)
    terms = w * confs[0] * scores[0]
    assert score[0] == pytest.approx(terms.sum() / (w * confs[0]).sum())
    assert conf[0] == pytest.approx((w * confs[0]).sum() / 1.0 * abs(terms.sum()) / np.abs(terms).sum())
    # an unknown view steps aside rather than counting as zero
    assert score[1] == pytest.approx((0.2 * 1.0 * 0.2 + 0.6 * 0.5 * 0.4) / (0.2 * 1.0 + 0.6 * 0.5))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(*[st.floats(-1, 1)] * 3, *[st.floats(0, 1)] * 3), min_size=1, max_size=20))
def test_ensemble_score_and_confidence_stay_in_range(rows: list[tuple[float, ...]]) -> None:
    a = np.array(rows)
    score, conf = combine(a[:, :3], a[:, 3:], EnsembleConfig().fixed_vector())
    ok = ~np.isnan(score)
    assert (np.abs(score[ok]) <= 1 + 1e-12).all()
    assert ((conf >= 0) & (conf <= 1 + 1e-12)).all()


def test_learned_weights_use_only_labels_known_before_each_period() -> None:
    n = 800
    ts = pd.date_range("2015-01-01", periods=n, freq="D")
    rng = np.random.default_rng(0)
    market = rng.normal(size=n)
    panel = pd.DataFrame(
        {
            "ts": ts,
            "label_end": ts + pd.Timedelta(days=5),
            "target": market * 0.5,  # only the market view explains the forward return
            "banker": rng.normal(size=n),
            "banker_conf": 1.0,
            "investor": rng.normal(size=n),
            "investor_conf": 1.0,
            "market": market,
            "market_conf": 1.0,
        }
    )
    cfg = EnsembleConfig(weights="learned", min_rows=100, floor=0.05)
    starts = period_starts(
        pd.Timestamp("2015-01-01", tz="UTC"), pd.Timestamp("2017-03-01", tz="UTC"), "yearly"
    )
    table = learned_weights(panel, starts, cfg, pd.Timedelta(days=7))
    assert list(table.index) == list(starts)
    assert not table.loc[starts[0], "fitted"]  # no label known before the first start
    fitted = table[table["fitted"]]
    assert len(fitted) == 2
    assert (fitted["market"] > 0.85).all()
    assert fitted[["banker", "investor", "market"]].sum(axis=1).to_numpy() == pytest.approx(1.0)
    # the 2016 fit saw only rows whose labels ended before 2016-01-01 minus the embargo
    assert fitted.loc[starts[1], "rows"] == int((panel["label_end"] < pd.Timestamp("2015-12-25")).sum())
    w = weights_at(table, pd.DatetimeIndex([pd.Timestamp("2014-06-01", tz="UTC"), starts[2]]), cfg)
    assert w[0] == pytest.approx(cfg.fixed_vector())
    assert w[1] == pytest.approx(table.loc[starts[2], ["banker", "investor", "market"]].to_numpy(dtype=float))


def test_rule_regimes_match_the_risk_rule() -> None:
    n = 400
    up = pd.Series(100 * np.exp(np.linspace(0, 0.5, n)), index=_index(n))
    labels = rule_regimes(up, 252, RegimeConfig())
    assert (labels.iloc[:219] == "").all()  # SMA 200 and its 20-bar slope not known yet
    assert (labels.iloc[220:] == "bull").all()
    down = pd.Series(up.to_numpy()[::-1].copy(), index=up.index)
    assert (rule_regimes(down, 252, RegimeConfig()).iloc[220:] == "bear").all()
    assert list(label_at(labels, np.array([labels.index[0].value - 1, labels.index[-1].value]))) == [
        "",
        "bull",
    ]


def test_hmm_forward_filter_is_causal() -> None:
    from hmmlearn.hmm import GaussianHMM

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0.1, 1, (200, 2)), rng.normal(-0.2, 3, (200, 2))])
    model = GaussianHMM(2, covariance_type="diag", random_state=0, n_iter=20).fit(x)
    full = _forward_filter(model, x)
    part = _forward_filter(model, x[:250])
    np.testing.assert_allclose(full[:250], part, rtol=0, atol=1e-12)
    np.testing.assert_allclose(full.sum(axis=1), 1.0)


@pytest.mark.slow
def test_hmm_regimes_label_calm_and_turbulent_years() -> None:
    rng = np.random.default_rng(3)
    n = 252 * 12
    vol = np.where((np.arange(n) // 252) % 4 == 3, 0.04, 0.008)
    drift = np.where(vol > 0.01, -0.002, 0.0006)
    close = pd.Series(
        100 * np.exp(np.cumsum(rng.normal(drift, vol))),
        index=pd.date_range("2005-01-03", periods=n, freq="B", tz="UTC"),
    )
    labels = hmm_regimes(close, 252, RegimeConfig(source="hmm", hmm_states=3, hmm_train_years=4))
    known = labels[labels != ""]
    # a fit needs 504 complete rows; 2005-06 hold 522 business days minus the 20-bar warm-up
    assert known.index[0].year == 2008
    turbulent = known[vol[close.index.get_indexer(known.index)] > 0.01]
    calm = known[vol[close.index.get_indexer(known.index)] < 0.01]
    assert (turbulent == "crisis").mean() > 0.6  # 66% measured: the filter needs a few bars to switch
    assert (calm == "crisis").mean() < 0.1


def test_hysteresis_holds_between_the_thresholds() -> None:
    score = np.array([np.nan, 0.1, 0.3, 0.2, 0.05, -0.01, 0.26, 0.3])
    conf = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.1, 0.5])
    out = hysteresis(score, conf, enter=0.25, exit_=0.0, min_conf=0.2, allow_short=False)
    np.testing.assert_array_equal(out, [np.nan, 0, 1, 1, 1, 0, 0, 1])
    short = hysteresis(np.array([-0.3, -0.1, 0.01]), np.full(3, 0.5), 0.25, 0.0, 0.2, True)
    np.testing.assert_array_equal(short, [-1, -1, 0])


@settings(max_examples=60, deadline=None)
@given(st.floats(-0.5, 1.5) | st.just(float("nan")))
def test_conviction_never_increases_the_risk_sized_quantity(size: float) -> None:
    limits = RiskLimits.minimal()
    state = RiskState(equity=100_000.0, peak_equity=100_000.0, cash=100_000.0)
    inst = instrument_for("SPY")

    def intent(s: float) -> OrderIntent:
        return OrderIntent("i", "SPY", IntentKind.ENTRY, Side.BUY, 0, 0, "", 400.0, 5.0, None, Exits(3.0), s)

    full = evaluate(limits, state, intent(1.0), inst)
    scaled = evaluate(limits, state, intent(size), inst)
    assert scaled.qty_approved <= full.qty_approved
    if size == size and 0 < size <= 1:
        assert scaled.qty_requested == pytest.approx(full.qty_requested * size)
