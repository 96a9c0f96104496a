"""Point-in-time feature tables: each column against an independent computation, no look-ahead
(a property test), release lags, headline times, and the feature cache."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
import talib
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from hflite import features
from hflite.ai.feature_cache import FeatureSet, build_features, scorer_name
from hflite.data.sample import ensure_sample, read_sample_file, sample_catalog
from hflite.data.store import DataNotFoundError, Store, known_at
from hflite.features import (
    FEATURE_GROUPS,
    FEATURES,
    MACRO_SERIES,
    FeatureConfig,
    FeatureInputs,
    compute_features,
    prepare_inputs,
)

SYMBOLS = ["SPY", "AAPL", "BTC-USD", "EURUSD"]
CONTEXT = ["QQQ", "TLT", "XOM"]  # breadth symbols besides SPY and AAPL
NS_DAY = 86_400 * 10**9


class ByteScorer:
    """A deterministic, instant stand-in for a sentiment model, with a call counter."""

    name = "test:crc32"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return np.array([(zlib.crc32(t.encode()) % 201 - 100) / 100 for t in texts])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    s = Store(tmp_path_factory.mktemp("features_store"))
    ensure_sample(s)
    return s


@pytest.fixture(scope="module")
def inputs(store: Store) -> FeatureInputs:
    """Real data 2014-2020 for 4 symbols (+ 3 breadth symbols), every macro series, scored news."""
    bars = {s: store.read_bars(s, "1d", "2014-01-01", "2020-12-31") for s in SYMBOLS + CONTEXT}
    macro = {sid: store.read_series(sid, "2012-01-01", "2021-01-05") for sid in MACRO_SERIES}
    news = store.read_news(start="2014-01-01", end="2021-01-05")
    news["score"] = ByteScorer()(news["headline"].tolist())
    return prepare_inputs(bars, macro, news, SYMBOLS)


@pytest.fixture(scope="module")
def frames(inputs: FeatureInputs) -> dict[str, pd.DataFrame]:
    return compute_features(inputs, FeatureConfig())


# ---------------------------------------------------------------------------------------------------
# the catalogue


def test_the_features_package_names_are_pinned():
    assert sorted(features.__all__) == sorted(
        [
            "FEATURES",
            "FEATURES_VERSION",
            "FEATURE_DOCS",
            "FEATURE_GROUPS",
            "MACRO_SERIES",
            "FeatureConfig",
            "FeatureInputs",
            "bars_per_year",
            "compute_features",
            "input_warnings",
            "prepare_inputs",
        ]
    )


def test_features_are_the_ordered_union_of_the_groups_and_every_one_is_documented():
    assert list(FEATURE_GROUPS) == ["technical", "cross_asset", "macro", "sentiment"]
    assert FEATURES == tuple(c for cols in FEATURE_GROUPS.values() for c in cols)
    assert len(set(FEATURES)) == len(FEATURES) == 44
    assert set(features.FEATURE_DOCS) == set(FEATURES)
    assert "USREC" not in MACRO_SERIES


def test_frames_are_indexed_by_availability_time_with_float_columns(frames, inputs):
    for sym in SYMBOLS:
        frame = frames[sym]
        assert list(frame.columns) == list(FEATURES)
        assert (frame.dtypes == np.float64).all()
        assert str(frame.index.dtype) == "datetime64[ns, UTC]" and frame.index.name == "ts"
        assert frame.index.equals(pd.DatetimeIndex(inputs.bars[sym]["ts"]).rename("ts"))
    assert (frames["SPY"].index.hour.isin([17, 18, 20, 21])).all()  # NYSE closes (17, 18: early closes)
    assert (frames["BTC-USD"].index.hour == 0).all()  # the UTC day ends at midnight


def test_config_is_frozen_validated_and_hashed():
    config = FeatureConfig()
    with pytest.raises(ValueError, match="frozen"):
        config.bb_window = 10  # type: ignore[misc]
    with pytest.raises(ValueError, match="extra"):
        FeatureConfig(rsi_window=10)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="macd_fast"):
        FeatureConfig(macd_fast=30)
    assert FeatureConfig().version() == config.version()
    assert FeatureConfig(bb_window=10).version() != config.version()


def test_usrec_is_refused_as_an_input(store):
    usrec = store.read_series("USREC", "2019-01-01", "2019-12-31")
    with pytest.raises(ValueError, match="not point-in-time"):
        prepare_inputs({}, {"USREC": usrec}, None, [])


# ---------------------------------------------------------------------------------------------------
# technical features against independent computations


def _wilder_rsi(c: np.ndarray, n: int = 14) -> np.ndarray:
    d = np.diff(c)
    gain, loss = np.clip(d, 0, None), np.clip(-d, 0, None)
    out = np.full(len(c), np.nan)
    ag, al = gain[:n].mean(), loss[:n].mean()
    out[n] = 100 * ag / (ag + al)
    for i in range(n, len(d)):
        ag, al = (ag * (n - 1) + gain[i]) / n, (al * (n - 1) + loss[i]) / n
        out[i + 1] = 100 * ag / (ag + al)
    return out


def _true_range(h: np.ndarray, low: np.ndarray, c: np.ndarray) -> np.ndarray:
    tr = np.full(len(c), np.nan)
    tr[1:] = np.maximum.reduce([h[1:] - low[1:], np.abs(h[1:] - c[:-1]), np.abs(low[1:] - c[:-1])])
    return tr


def _wilder_atr(h: np.ndarray, low: np.ndarray, c: np.ndarray, n: int = 14) -> np.ndarray:
    tr = _true_range(h, low, c)
    out = np.full(len(c), np.nan)
    out[n] = tr[1 : n + 1].mean()
    for i in range(n + 1, len(c)):
        out[i] = (out[i - 1] * (n - 1) + tr[i]) / n
    return out


def _wilder_adx(h: np.ndarray, low: np.ndarray, c: np.ndarray, n: int = 14) -> np.ndarray:
    up, dn = np.zeros(len(c)), np.zeros(len(c))
    u, d = h[1:] - h[:-1], low[:-1] - low[1:]
    up[1:] = np.where((u > d) & (u > 0), u, 0.0)
    dn[1:] = np.where((d > u) & (d > 0), d, 0.0)
    tr = _true_range(h, low, c)
    sp, sm, st_ = up[1:n].sum(), dn[1:n].sum(), tr[1:n].sum()
    out, dxs, adx = np.full(len(c), np.nan), [], 0.0
    for i in range(n, len(c)):
        sp, sm, st_ = sp - sp / n + up[i], sm - sm / n + dn[i], st_ - st_ / n + tr[i]
        pdi, mdi = sp / st_, sm / st_
        dx = 100 * abs(pdi - mdi) / (pdi + mdi)
        if i < 2 * n - 1:
            dxs.append(dx)
            continue
        adx = (sum(dxs) + dx) / n if i == 2 * n - 1 else (adx * (n - 1) + dx) / n
        out[i] = adx
    return out


def _close(a: pd.Series | np.ndarray, b: pd.Series | np.ndarray, rtol: float = 1e-9, atol: float = 1e-12):
    np.testing.assert_allclose(
        np.asarray(a, float), np.asarray(b, float), rtol=rtol, atol=atol, equal_nan=True
    )


@pytest.mark.parametrize("symbol", ["AAPL", "BTC-USD"])
def test_returns_volatility_ranges_and_trend_match_pandas(symbol, frames, inputs):
    bars, f = inputs.bars[symbol], frames[symbol]
    close, log_close = bars["close"], np.log(bars["close"])
    per_year = 365 if symbol == "BTC-USD" else 252
    for n in (1, 5, 21, 63, 252):
        _close(f[f"ret_{n}"], log_close.diff(n))
    for n in (21, 63):
        _close(f[f"vol_{n}"], log_close.diff().rolling(n).std() * np.sqrt(per_year))
    _close(f["dist_high_252"], close / bars["high"].rolling(252).max() - 1)
    _close(f["dist_low_252"], close / bars["low"].rolling(252).min() - 1)
    _close(f["trend_50_200"], close.rolling(50).mean() / close.rolling(200).mean() - 1)
    mid, sd = close.rolling(20).mean(), close.rolling(20).std(ddof=0)
    _close(f["bb_pos"], (close - mid) / (2 * sd))
    log_volume = np.log(bars["volume"])
    prev = log_volume.shift(1).rolling(20)
    _close(f["volume_z"], (log_volume - prev.mean()) / prev.std())


def test_wilder_indicators_match_hand_computed_rsi_atr_adx(frames, inputs):
    bars, f = inputs.bars["AAPL"], frames["AAPL"]
    h, low, c = (bars[k].to_numpy() for k in ("high", "low", "close"))
    _close(f["rsi_14"], _wilder_rsi(c), atol=1e-10)
    _close(f["atr_pct"], _wilder_atr(h, low, c) / c)
    _close(f["adx_14"], _wilder_adx(h, low, c), atol=1e-10)


def test_macd_histogram_matches_pandas_ewm_once_the_seed_has_faded(frames, inputs):
    close = inputs.bars["AAPL"]["close"]
    macd = close.ewm(span=12, adjust=False).mean() - close.ewm(span=26, adjust=False).mean()
    hist = (macd - macd.ewm(span=9, adjust=False).mean()) / close
    ours = frames["AAPL"]["macd_hist_pct"]
    assert ours.iloc[:33].isna().all() and ours.iloc[33:].notna().all()  # TA-Lib's 33-bar lookback
    _close(ours.iloc[400:], hist.iloc[400:], rtol=0, atol=1e-12)
    _close(ours.iloc[33:], talib.MACD(close.to_numpy(), 12, 26, 9)[2][33:] / close.iloc[33:])


def test_volume_z_is_nan_without_volume(frames):
    assert frames["EURUSD"]["volume_z"].isna().all()
    assert frames["EURUSD"]["rsi_14"].notna().sum() > 1000


# ---------------------------------------------------------------------------------------------------
# cross-asset and macro features against pandas as-of joins


def _asof(t: pd.DatetimeIndex, known: pd.Series, values: pd.Series, max_age_days: float) -> np.ndarray:
    """pandas merge_asof of values stamped ``known`` onto times t (<= t), NaN when too old."""
    right = pd.DataFrame({"known": pd.DatetimeIndex(known).as_unit("ns"), "v": np.asarray(values, float)})
    right = right.sort_values("known", kind="mergesort")
    left = pd.DataFrame({"t": t.as_unit("ns")})
    merged = pd.merge_asof(left, right, left_on="t", right_on="known", direction="backward")
    age = (merged["t"] - merged["known"]) / pd.Timedelta(days=1)
    return np.where(age <= max_age_days, merged["v"].to_numpy(), np.nan)


def _pandas_macro(series: dict[str, pd.DataFrame]) -> dict[str, tuple[pd.Series, pd.Series]]:
    """Each macro column as (known, value) per observation, with pandas."""
    out: dict[str, tuple[pd.Series, pd.Series]] = {}

    def put(sid: str, name: str, values: pd.Series) -> None:
        out[name] = (series[sid]["known"].cummax(), values)

    v = {sid: f["value"] for sid, f in series.items()}
    put("CPIAUCSL", "cpi_yoy", v["CPIAUCSL"].pct_change(12, fill_method=None) * 100)
    put("CPIAUCSL", "cpi_trend", (v["CPIAUCSL"].pct_change(12, fill_method=None) * 100).diff(3))
    put("CPILFESL", "core_cpi_yoy", v["CPILFESL"].pct_change(12, fill_method=None) * 100)
    put("UNRATE", "unrate", v["UNRATE"])
    put("UNRATE", "unrate_chg_3m", v["UNRATE"].diff(3))
    put("FEDFUNDS", "fedfunds", v["FEDFUNDS"])
    put("FEDFUNDS", "fedfunds_chg_6m", v["FEDFUNDS"].diff(6))
    put("DGS10", "dgs10", v["DGS10"])
    put("T10YIE", "t10yie", v["T10YIE"])
    avg = v["ICSA"].rolling(4).mean()
    put("ICSA", "claims_z", (avg - avg.shift(1).rolling(52).mean()) / avg.shift(1).rolling(52).std())
    put("INDPRO", "indpro_yoy", v["INDPRO"].pct_change(12, fill_method=None) * 100)
    put("DTWEXBGS", "usd_ret_63", np.log(v["DTWEXBGS"]).diff(63))
    oil = v["DCOILWTICO"]
    put("DCOILWTICO", "oil_ret_63", (oil.diff(63) / oil.shift(63).abs()).clip(-1, 3))
    put("T10Y2Y", "curve_slope", v["T10Y2Y"])
    vix = v["VIXCLS"]
    put("VIXCLS", "vix", vix)
    put("VIXCLS", "vix_z", (vix - vix.shift(1).rolling(252).mean()) / vix.shift(1).rolling(252).std())
    put("VIXCLS", "vix_chg_5", vix.diff(5))
    return out


@pytest.mark.parametrize("symbol", ["SPY", "BTC-USD", "EURUSD"])
def test_macro_columns_match_pandas_merge_asof_on_release_times(symbol, frames, inputs):
    f = frames[symbol]
    expected = {
        name: _asof(f.index, known, values, 100.0)
        for name, (known, values) in _pandas_macro(dict(inputs.macro)).items()
    }
    expected["real_rate"] = expected["dgs10"] - expected["t10yie"]
    for name in FEATURE_GROUPS["macro"] + ("curve_slope", "vix", "vix_z", "vix_chg_5"):
        _close(f[name], expected[name], rtol=1e-9, atol=1e-9)
    assert f.loc["2016":, list(FEATURE_GROUPS["macro"])].notna().all().all()


def test_spy_trend_and_breadth_match_pandas_merge_asof(frames, inputs):
    f = frames["BTC-USD"]
    spy = inputs.bars["SPY"]
    trend = spy["close"] / spy["close"].rolling(200).mean() - 1
    _close(f["spy_trend"], _asof(f.index, spy["ts"], trend, 10.0))
    _close(f["spy_ret_21"], _asof(f.index, spy["ts"], np.log(spy["close"]).diff(21), 10.0))
    above = []
    for sym in ["SPY", "AAPL", "QQQ", "TLT", "XOM"]:
        b = inputs.bars[sym]
        sma = b["close"].rolling(200).mean()
        above.append(_asof(f.index, b["ts"], np.where(sma.isna(), np.nan, b["close"] > sma), 10.0))
    _close(f["breadth"], np.nanmean(np.vstack(above), axis=0))
    # a crypto bar at Saturday 00:00 UTC sees Friday's SPY close, never a later one
    saturday = pd.Timestamp("2019-03-09", tz="UTC")
    friday = spy.index[spy["ts"] == pd.Timestamp("2019-03-08 21:00", tz="UTC")][0]
    assert f.loc[saturday, "spy_trend"] == trend.loc[friday]


def test_breadth_leaves_out_symbols_without_200_bars_yet(inputs):
    late = inputs.bars["QQQ"].iloc[-150:]  # 150 bars only: no SMA200 yet
    bars = {**inputs.bars, "QQQ": late}
    config = FeatureConfig(breadth_symbols=("QQQ",))
    f = compute_features(FeatureInputs(("SPY",), bars, macro={}, news=None), config)["SPY"]
    assert f["breadth"].isna().all()


# ---------------------------------------------------------------------------------------------------
# point in time


def test_cpi_is_visible_only_after_its_release(frames, inputs):
    cpi = inputs.macro["CPIAUCSL"].set_index("date")["value"]
    yoy = {
        m: (cpi[pd.Timestamp(m, tz="UTC")] / cpi[pd.Timestamp(m, tz="UTC") - pd.DateOffset(years=1)] - 1)
        * 100
        for m in ("2020-02-01", "2020-03-01")
    }
    released = known_at("CPIAUCSL", [pd.Timestamp("2020-03-01", tz="UTC")])[0]
    assert released == pd.Timestamp("2020-04-16 04:00", tz="UTC")
    spy, btc = frames["SPY"]["cpi_yoy"], frames["BTC-USD"]["cpi_yoy"]
    assert btc[pd.Timestamp("2020-04-11 00:00", tz="UTC")] == yoy["2020-02-01"]  # the bar of 2020-04-10
    assert spy[pd.Timestamp("2020-04-15 20:00", tz="UTC")] == yoy["2020-02-01"]
    assert spy[pd.Timestamp("2020-04-16 20:00", tz="UTC")] == yoy["2020-03-01"]  # first bar after
    assert btc[pd.Timestamp("2020-04-16 00:00", tz="UTC")] == yoy["2020-02-01"]
    assert btc[pd.Timestamp("2020-04-17 00:00", tz="UTC")] == yoy["2020-03-01"]


def _one_symbol_inputs(news: pd.DataFrame) -> FeatureInputs:
    ts = pd.date_range("2021-06-01 20:00", periods=40, freq="D", tz="UTC")  # closes at 20:00 UTC
    close = 100 + np.arange(40.0)
    bars = pd.DataFrame({"ts": ts, "open": close, "high": close + 1, "low": close - 1, "close": close})
    bars["volume"] = 1e6
    return FeatureInputs(("X",), {"X": bars}, {"X": 252.0}, {}, news)


def test_a_headline_at_2100_utc_is_not_in_that_days_2000_utc_features():
    at = pd.Timestamp("2021-06-10 21:00", tz="UTC")
    news = pd.DataFrame({"ts": [at, at], "tickers": ["", "X"], "score": [0.5, -0.25]})
    f = compute_features(_one_symbol_inputs(news))["X"]
    same_day, next_day = (
        pd.Timestamp("2021-06-10 20:00", tz="UTC"),
        pd.Timestamp("2021-06-11 20:00", tz="UTC"),
    )
    assert f.loc[same_day, "news_mkt_count"] == 0 and np.isnan(f.loc[same_day, "news_mkt_mean"])
    assert f.loc[next_day, ["news_mkt_count", "news_mkt_mean", "news_mkt_std"]].tolist() == [1, 0.5, 0]
    assert f.loc[next_day, ["news_sym_count", "news_sym_mean", "news_sym_surprise"]].tolist() == [1, -0.25, 0]
    counts = f["news_mkt_count"]  # in the 5-day window (t - 5 days, t] from 06-11 to 06-15 only
    assert counts[counts > 0].index.day.tolist() == [11, 12, 13, 14, 15]
    assert f["news_sym_mean"].isna().sum() == 35 and (f["news_sym_count"] >= 0).all()


def test_sentiment_matches_direct_window_sums_on_real_headlines(frames, inputs):
    news = inputs.news
    assert news is not None
    market = news[news["tickers"] == ""]
    aapl = news[news["tickers"].str.split(",").apply(lambda tags: "AAPL" in tags)]
    f = frames["AAPL"]
    rows = f.index[np.random.default_rng(3).choice(len(f), 60, replace=False)]
    for t in rows:
        for prefix, subset in (("news_mkt", market), ("news_sym", aapl)):
            week = subset["score"][(subset["ts"] > t - pd.Timedelta(days=5)) & (subset["ts"] <= t)]
            season = subset["score"][(subset["ts"] > t - pd.Timedelta(days=60)) & (subset["ts"] <= t)]
            assert f.loc[t, f"{prefix}_count"] == len(week)
            if len(week):
                assert f.loc[t, f"{prefix}_mean"] == pytest.approx(week.mean(), abs=1e-12)
                assert f.loc[t, f"{prefix}_std"] == pytest.approx(week.std(ddof=0), abs=1e-12)
                assert f.loc[t, f"{prefix}_surprise"] == pytest.approx(week.mean() - season.mean(), abs=1e-12)
            else:
                assert np.isnan(f.loc[t, [f"{prefix}_mean", f"{prefix}_std", f"{prefix}_surprise"]]).all()


def _cut(inputs: FeatureInputs, t: pd.Timestamp, truncate: bool, seed: int) -> FeatureInputs:
    """The inputs with everything known after t multiplied by random factors (or dropped)."""
    rng = np.random.default_rng(seed)
    bars = {}
    for sym, frame in inputs.bars.items():
        later = (frame["ts"] > t).to_numpy()
        if truncate:
            bars[sym] = frame[~later].reset_index(drop=True)
            continue
        frame = frame.copy()
        factor = rng.uniform(0.5, 2.0, int(later.sum()))
        for col in ("open", "high", "low", "close", "volume"):
            frame.loc[later, col] = frame.loc[later, col].to_numpy() * factor
        bars[sym] = frame
    macro = {}
    for sid, frame in inputs.macro.items():
        later = (frame["known"] > t).to_numpy()
        frame = frame[~later].reset_index(drop=True) if truncate else frame.copy()
        if not truncate:
            frame.loc[later, "value"] = frame.loc[later, "value"].to_numpy() * rng.uniform(
                0.5, 2.0, later.sum()
            )
        macro[sid] = frame
    assert inputs.news is not None
    later = (inputs.news["ts"] > t).to_numpy()
    news = inputs.news[~later].reset_index(drop=True) if truncate else inputs.news.copy()
    if not truncate:
        news.loc[later, "score"] = -news.loc[later, "score"]
    return FeatureInputs(inputs.symbols, bars, inputs.bars_per_year, macro, news)


@pytest.fixture(scope="module")
def cut_times(inputs: FeatureInputs) -> list[int]:
    """Bar closes of each kind of calendar, and headline times: the boundaries that matter."""
    times = np.concatenate([pd.DatetimeIndex(inputs.bars[s]["ts"]).asi8 for s in SYMBOLS])
    assert inputs.news is not None
    times = np.concatenate([times, pd.DatetimeIndex(inputs.news["ts"]).asi8])
    lo, hi = pd.Timestamp("2015-01-01", tz="UTC").value, pd.Timestamp("2020-12-31", tz="UTC").value
    return sorted(int(x) for x in np.unique(times) if lo <= x <= hi)


@settings(max_examples=20, deadline=None, derandomize=True, phases=(Phase.explicit, Phase.generate))
@given(data=st.data(), truncate=st.booleans(), seed=st.integers(0, 2**31))
def test_no_feature_changes_when_anything_known_later_changes(
    data, truncate, seed, inputs, frames, cut_times
):
    exact = data.draw(st.booleans(), label="cut exactly at a bar or headline time")
    if exact:
        cut = data.draw(st.sampled_from(cut_times), label="cut")
    else:
        cut = data.draw(st.integers(cut_times[0], cut_times[-1]), label="cut")
    t = pd.Timestamp(cut, tz="UTC")
    changed = compute_features(_cut(inputs, t, truncate, seed), FeatureConfig())
    checked = set()
    for sym in SYMBOLS:
        before = frames[sym].loc[:t]
        after = changed[sym].loc[:t]
        pd.testing.assert_frame_equal(after, before, check_exact=False, rtol=1e-12, atol=1e-12)
        checked |= set(before.columns)
        if not truncate:  # the perturbation did reach the later rows
            later = frames[sym].loc[t + pd.Timedelta(1, "ns") :]
            assert len(later) == 0 or not later.equals(changed[sym].loc[t + pd.Timedelta(1, "ns") :])
    assert checked == set(FEATURES)


# ---------------------------------------------------------------------------------------------------
# the edge: store reads and the cache


@pytest.fixture
def small_store(tmp_path) -> Store:
    """SPY, AAPL and two macro series of the sample, no news."""
    s = Store(tmp_path / "small")
    for f in sample_catalog():
        frame = read_sample_file(f)
        if f.kind == "bars" and f.freq == "1d" and f.symbol in ("SPY", "AAPL"):
            s.write_bars(f.symbol, "1d", frame)
        elif f.kind == "macro" and f.symbol in ("VIXCLS", "DGS10"):
            s.write_series(f.symbol, frame)
    return s


def test_the_second_build_is_a_cache_hit_with_identical_frames(store):
    scorer = ByteScorer()
    first = build_features(store, ["SPY", "BTC-USD"], "2019-01-01", "2019-12-31", scorer=scorer)
    second = build_features(store, ["SPY", "BTC-USD"], "2019-01-01", "2019-12-31", scorer=scorer)
    assert not first.from_cache and second.from_cache
    assert second.key == first.key and second.data_versions == first.data_versions
    for sym in ("SPY", "BTC-USD"):
        pd.testing.assert_frame_equal(second.frames[sym], first.frames[sym], check_exact=True)
    assert first.frames["SPY"].index[0] == pd.Timestamp("2019-01-02 21:00", tz="UTC")  # warm-up dropped
    assert first.frames["SPY"][list(FEATURE_GROUPS["technical"])].notna().all().all()  # warm-up was read
    assert set(first.data_versions) >= {"bars/SPY/1d", "bars/KO/1d", "macro/VIXCLS", "news/2019"}
    assert second.warnings == first.warnings and second.scorer == "test:crc32"
    assert (
        first.path == second.path and first.path is not None and first.path.parent == store.root / "features"
    )
    assert first.groups == FEATURE_GROUPS and isinstance(first, FeatureSet)
    assert first.panel().shape == (len(first.frames["SPY"]) + len(first.frames["BTC-USD"]), len(FEATURES))


def test_headline_scores_are_cached_per_news_partition_and_scorer(store):
    scorer = ByteScorer()
    build_features(store, ["AAPL"], "2021-03-01", "2021-06-30", scorer=scorer)
    calls = scorer.calls
    build_features(store, ["AAPL"], "2021-03-01", "2021-06-30", FeatureConfig(bb_window=10), scorer=scorer)
    assert calls > 0 and scorer.calls == calls  # new config: features recomputed, scores reused


def test_a_changed_config_or_data_version_changes_the_key(small_store):
    scorer = ByteScorer()
    base = build_features(small_store, ["AAPL"], "2020-01-01", "2020-12-31", scorer=scorer)
    other = build_features(
        small_store, ["AAPL"], "2020-01-01", "2020-12-31", FeatureConfig(bb_width=2.5), scorer=scorer
    )
    assert other.key != base.key and not other.from_cache
    vix = small_store.read_series("VIXCLS")
    vix.loc[vix.index[-1], "value"] += 1.0  # a revision far outside the window still changes the data
    small_store.write_series("VIXCLS", vix)
    revised = build_features(small_store, ["AAPL"], "2020-01-01", "2020-12-31", scorer=scorer)
    assert revised.key != base.key and not revised.from_cache
    assert revised.data_versions["macro/VIXCLS"] != base.data_versions["macro/VIXCLS"]
    assert base.data_versions["bars/AAPL/1d"] == revised.data_versions["bars/AAPL/1d"]


def test_missing_optional_inputs_give_nan_columns_and_warnings(small_store):
    fs = build_features(small_store, ["AAPL"], "2020-01-01", "2020-12-31", scorer=ByteScorer())
    f = fs.frames["AAPL"]
    assert f["cpi_yoy"].isna().all() and f["real_rate"].isna().all()  # CPIAUCSL, T10YIE not stored
    assert f["dgs10"].notna().all() and f["vix"].notna().all() and f["spy_trend"].notna().all()
    assert f[list(FEATURE_GROUPS["sentiment"])].isna().all().all()  # no news at all
    assert any("CPIAUCSL" in w and "cpi_yoy" in w for w in fs.warnings)
    assert any("no news" in w for w in fs.warnings)
    assert any("breadth leaves out 19 symbols" in w for w in fs.warnings)
    assert f["breadth"].isin([0.0, 0.5, 1.0]).all()


def test_a_missing_traded_symbol_raises_the_stores_error(small_store):
    with pytest.raises(DataNotFoundError, match="QQQ"):
        build_features(small_store, ["AAPL", "QQQ"], "2020-01-01", "2020-12-31", scorer=ByteScorer())


def test_a_missing_market_symbol_gives_nan_market_columns(small_store):
    fs = build_features(
        small_store,
        ["AAPL"],
        "2020-01-01",
        "2020-12-31",
        FeatureConfig(market_symbol="QQQ"),
        scorer=ByteScorer(),
    )
    assert fs.frames["AAPL"][["spy_trend", "spy_ret_21"]].isna().all().all()
    assert any("market symbol QQQ" in w for w in fs.warnings)


def test_scorer_names_identify_what_scored():
    class Analyzer:
        method = "lm"

        def scores(self, texts: Sequence[str]) -> np.ndarray:
            return np.zeros(len(texts))

    assert scorer_name(ByteScorer()) == "test:crc32"
    assert scorer_name(Analyzer().scores).endswith("Analyzer.scores:lm")
