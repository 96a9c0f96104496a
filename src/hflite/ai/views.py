"""The three views of an asset: banker (macro, rates, fundamentals), investor (news sentiment and
market psychology) and market (technicals, the ML prediction, the regime).

Each view is a list of factors. A factor maps one point-in-time input to a signal in [-1, 1] with a
fixed, documented transform (``tanh(x / scale)`` and the like), and carries a weight and a
sensitivity per asset group: rising inflation is bad news for bonds and good news for gold, a
stronger dollar lowers EURUSD and raises USDJPY. For each bar:

- ``score = sum(w * sens * signal) / sum(w * |sens|)`` over the factors whose input is known, so it
  lies in [-1, 1], and each factor's ``contribution`` is its term of that sum (they add up to the
  score);
- ``confidence = coverage * agreement``: coverage is the share of the view's weight whose inputs
  are known, agreement ``|sum(contributions)| / sum(|contributions|)`` (1 when every known factor
  points the same way, near 0 when they cancel).

Everything here is row-wise over point-in-time inputs, so a view at t uses data known at t only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hflite.domain.instrument import AssetClass, Instrument

VIEWS = ("banker", "investor", "market")
GROUPS = ("equity", "energy", "bonds", "gold", "crypto", "fx_usd_quote", "fx_usd_base")
REGIME_SIGNAL = {"bull": 1.0, "sideways": 0.0, "bear": -1.0, "crisis": -1.0}

Transform = Callable[[dict[str, np.ndarray]], np.ndarray]


def asset_group(inst: Instrument) -> str:
    """How an instrument reacts to macro factors: its asset group."""
    if inst.asset_class is AssetClass.CRYPTO:
        return "crypto"
    if inst.asset_class is AssetClass.FX:
        return "fx_usd_base" if inst.symbol.startswith("USD") else "fx_usd_quote"
    if inst.symbol in ("TLT", "IEF", "SHY", "AGG", "BND"):
        return "bonds"
    if inst.symbol in ("GLD", "IAU", "SLV"):
        return "gold"
    if inst.sector == "energy":
        return "energy"
    return "equity"


def _tanh(name: str, scale: float, center: float = 0.0, sign: float = 1.0) -> Transform:
    return lambda f: sign * np.tanh((f[name] - center) / scale)


@dataclass(frozen=True)
class Factor:
    """One input of a view: what it reads, how it becomes a signal, its weight and sensitivities."""

    name: str
    inputs: tuple[str, ...]
    transform: Transform
    weight: float
    sens: dict[str, float] = field(default_factory=dict)  # asset group -> sensitivity (default 1)
    note: str = ""

    def sensitivity(self, group: str) -> float:
        return self.sens.get(group, 1.0)


_RISKY = {"bonds": -0.5, "gold": -0.3, "fx_usd_quote": 0.0, "fx_usd_base": 0.0}


def _news_sym(f: dict[str, np.ndarray]) -> np.ndarray:
    count = np.nan_to_num(f["news_sym_count"])
    return np.tanh(f["news_sym_mean"] / 0.25) * np.minimum(1.0, count / 3.0)


def _momentum(f: dict[str, np.ndarray]) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.tanh(f["ret_63"] / (f["vol_63"] * np.sqrt(63 / 252)))


def _macd(f: dict[str, np.ndarray]) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.tanh(f["macd_hist_pct"] / (0.25 * f["atr_pct"]))


def _rsi_extreme(f: dict[str, np.ndarray]) -> np.ndarray:
    r = f["rsi_14"]
    out = np.where(r > 70, -(r - 70) / 30, np.where(r < 30, (30 - r) / 30, 0.0))
    return np.where(np.isnan(r), np.nan, out)


def _ml_prob(f: dict[str, np.ndarray]) -> np.ndarray:
    return np.clip((f["prob_up"] - 0.5) / 0.1, -1.0, 1.0)


def _ml_return(f: dict[str, np.ndarray]) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.tanh(f["exp_return"] / (f["vol_21"] * np.sqrt(5 / 252)))


def _regime(f: dict[str, np.ndarray]) -> np.ndarray:
    return f["regime_signal"]


BANKER: tuple[Factor, ...] = (
    Factor("yield curve slope", ("curve_slope",), _tanh("curve_slope", 1.0), 1.0,
           {"bonds": -0.5, "gold": 0.0, "crypto": 0.5, "fx_usd_quote": 0.0, "fx_usd_base": 0.0},
           "10y-2y spread; a steep curve prices in growth"),
    Factor("inflation trend", ("cpi_trend",), _tanh("cpi_trend", 0.5, sign=-1), 1.0,
           {"bonds": 1.5, "gold": -1.0, "energy": -0.5, "crypto": 0.5, "fx_usd_quote": 0.0,
            "fx_usd_base": 0.0},
           "CPI inflation, change over 3 months; accelerating inflation hurts bonds and stocks"),
    Factor("unemployment change", ("unrate_chg_3m",), _tanh("unrate_chg_3m", 0.3, sign=-1), 1.0,
           {"bonds": -1.0, "gold": -0.5, "crypto": 0.5, "fx_usd_quote": 0.0, "fx_usd_base": 0.0},
           "unemployment rate, change over 3 months"),
    Factor("policy rate change", ("fedfunds_chg_6m",), _tanh("fedfunds_chg_6m", 0.75, sign=-1), 1.0,
           {"bonds": 1.5, "gold": 0.5, "fx_usd_quote": 1.0, "fx_usd_base": -1.0},
           "fed funds rate, change over 6 months; hikes tighten conditions and lift the dollar"),
    Factor("real rate", ("real_rate",), _tanh("real_rate", 1.0, center=1.0, sign=-1), 0.75,
           {"gold": 1.5, "equity": 0.5, "energy": 0.5, "crypto": 0.5, "bonds": 0.0,
            "fx_usd_quote": 0.5, "fx_usd_base": -0.5},
           "10y yield minus 10y breakeven inflation; high real rates weigh on gold and valuations"),
    Factor("jobless claims", ("claims_z",), _tanh("claims_z", 2.0, sign=-1), 0.75,
           {"bonds": -0.5, "gold": 0.0, "fx_usd_quote": 0.0, "fx_usd_base": 0.0},
           "initial claims, 4-week average vs the last year (z-score)"),
    Factor("industrial production", ("indpro_yoy",), _tanh("indpro_yoy", 3.0), 0.75,
           {"energy": 1.5, "bonds": -0.5, "gold": 0.0, "fx_usd_quote": 0.0, "fx_usd_base": 0.0},
           "industrial production, change over 12 months (%)"),
    Factor("dollar trend", ("usd_ret_63",), _tanh("usd_ret_63", 0.04, sign=-1), 0.75,
           {"gold": 1.0, "crypto": 0.5, "energy": 0.5, "equity": 0.3, "bonds": 0.0,
            "fx_usd_quote": 1.5, "fx_usd_base": -1.5},
           "broad dollar index, change over 63 observations"),
    Factor("oil trend", ("oil_ret_63",), _tanh("oil_ret_63", 0.2), 0.5,
           {"energy": 1.5, "equity": 0.0, "bonds": -0.3, "gold": 0.0, "crypto": 0.0,
            "fx_usd_quote": 0.0, "fx_usd_base": 0.0},
           "WTI crude, change over 63 observations"),
    Factor("earnings surprise", ("eps_surprise",), _tanh("eps_surprise", 0.1), 1.0, {},
           "last reported EPS vs its estimate (fundamentals, when stored)"),
    Factor("earnings growth", ("eps_growth",), _tanh("eps_growth", 0.2), 0.75, {},
           "reported EPS vs a year before (fundamentals, when stored)"),
)  # fmt: skip

INVESTOR: tuple[Factor, ...] = (
    Factor("ticker news sentiment", ("news_sym_mean", "news_sym_count"), _news_sym, 1.5, {},
           "mean headline sentiment of the last 5 days, damped below 3 headlines"),
    Factor("ticker news surprise", ("news_sym_surprise",), _tanh("news_sym_surprise", 0.2), 1.0, {},
           "5-day sentiment vs its 60-day mean"),
    Factor("market news surprise", ("news_mkt_surprise",), _tanh("news_mkt_surprise", 0.1), 1.0, _RISKY,
           "market-wide headline sentiment, 5 days vs 60 days"),
    Factor("market news tone", ("news_mkt_mean",), _tanh("news_mkt_mean", 0.3), 0.5, _RISKY,
           "market-wide headline sentiment, last 5 days"),
    Factor("fear (VIX)", ("vix_z",), _tanh("vix_z", 1.5, sign=-1), 1.0, _RISKY,
           "VIX vs its last year (z-score); fear is a headwind for risk assets"),
    Factor("VIX change", ("vix_chg_5",), _tanh("vix_chg_5", 5.0, sign=-1), 0.5, _RISKY,
           "VIX change over 5 observations"),
    Factor("breadth", ("breadth",), _tanh("breadth", 0.25, center=0.5), 1.0, _RISKY,
           "share of the breadth universe above its 200-bar average"),
)  # fmt: skip

MARKET: tuple[Factor, ...] = (
    Factor("ML P(up)", ("prob_up",), _ml_prob, 2.0, {},
           "calibrated probability that the next period's return is positive (walk-forward model)"),
    Factor("ML expected return", ("exp_return", "vol_21"), _ml_return, 1.0, {},
           "model's expected return over the horizon, in units of recent volatility"),
    Factor("trend 50/200", ("trend_50_200",), _tanh("trend_50_200", 0.05), 1.0, {},
           "50-bar vs 200-bar average"),
    Factor("momentum 63", ("ret_63", "vol_63"), _momentum, 1.0, {},
           "63-bar return in units of its volatility"),
    Factor("MACD", ("macd_hist_pct", "atr_pct"), _macd, 0.5, {}, "MACD histogram vs ATR"),
    Factor("RSI extreme", ("rsi_14",), _rsi_extreme, 0.5, {},
           "RSI(14) beyond 70 / 30 (fades stretched moves)"),
    Factor("regime", ("regime_signal",), _regime, 1.0,
           {"bonds": -0.5, "gold": -0.3, "fx_usd_quote": 0.0, "fx_usd_base": 0.0},
           "market regime: bull +1, sideways 0, bear and crisis -1"),
)  # fmt: skip

#: The investor view's extra input when ``[llm] summarise`` is on: the LLM's summary of the ticker's
#: headlines (only where a model answered; the rule-based news factors cover the rest).
LLM_NEWS = Factor("LLM news summary", ("llm_news_score",), _tanh("llm_news_score", 0.5), 1.0, {},
                  "an LLM's score of the ticker's latest day of headlines (-1..1), for 5 bars")  # fmt: skip

VIEW_FACTORS: dict[str, tuple[Factor, ...]] = {"banker": BANKER, "investor": INVESTOR, "market": MARKET}
#: The market view's factors without the ML model (the "technical only" ablation).
TECHNICAL_FACTORS = tuple(f for f in MARKET if not f.name.startswith("ML"))


@dataclass
class ViewFrame:
    """One view over one symbol's bars: score, confidence and each factor's contribution."""

    view: str
    index: pd.DatetimeIndex
    score: np.ndarray
    confidence: np.ndarray
    factors: tuple[Factor, ...]
    contributions: np.ndarray  # bars x factors (NaN where the input is unknown)
    values: np.ndarray  # bars x factors: the factor's main input value

    def reasons(self, k: int, top: int = 3) -> list[tuple[str, float, float]]:
        """The ``top`` factors at bar k by absolute contribution: (factor, value, contribution)."""
        c = self.contributions[k]
        order = [j for j in np.argsort(-np.abs(np.nan_to_num(c))) if c[j] == c[j] and c[j] != 0][:top]
        return [(self.factors[j].name, float(self.values[k, j]), float(c[j])) for j in order]


def view_frame(
    view: str, inputs: pd.DataFrame, group: str, factors: tuple[Factor, ...] | None = None
) -> ViewFrame:
    """Compute one view row-wise over ``inputs`` (features plus prob_up, exp_return, regime_signal;
    a missing column counts as unknown)."""
    factors = VIEW_FACTORS[view] if factors is None else factors
    n = len(inputs)
    cols: dict[str, np.ndarray] = {}
    for f in factors:
        for name in f.inputs:
            if name not in cols:
                cols[name] = (
                    inputs[name].to_numpy(dtype=float) if name in inputs.columns else np.full(n, np.nan)
                )
    signals = np.empty((n, len(factors)))
    values = np.empty((n, len(factors)))
    weights = np.empty(len(factors))
    for j, f in enumerate(factors):
        with np.errstate(invalid="ignore", divide="ignore"):
            signals[:, j] = np.clip(f.transform(cols), -1.0, 1.0)
        values[:, j] = cols[f.inputs[0]]
        weights[j] = f.weight * f.sensitivity(group)
    return _combine(view, inputs.index, factors, signals, values, weights)


def _combine(
    view: str,
    index: pd.Index,
    factors: tuple[Factor, ...],
    signals: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
) -> ViewFrame:
    known = ~np.isnan(signals) & (weights != 0)
    total = np.abs(weights).sum()
    w_known = np.where(known, np.abs(weights), 0.0)
    denom = w_known.sum(axis=1)
    terms = np.where(known, weights * np.nan_to_num(signals), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        contrib = np.where(known, terms / denom[:, None], np.nan)
        score = np.where(denom > 0, terms.sum(axis=1) / denom, np.nan)
        spread = np.abs(terms).sum(axis=1)
        agreement = np.where(spread > 0, np.abs(terms.sum(axis=1)) / spread, 0.0)
    coverage = denom / total if total > 0 else np.zeros(len(denom))
    confidence = np.where(denom > 0, coverage * agreement, 0.0)
    return ViewFrame(view, pd.DatetimeIndex(index), score, confidence, factors, contrib, values)


def all_views(inputs: pd.DataFrame, group: str, *, ml: bool = True) -> dict[str, ViewFrame]:
    """The three views of one symbol (``ml=False``: the market view without the model's factors)."""
    out = {"banker": view_frame("banker", inputs, group)}
    investor = (*INVESTOR, LLM_NEWS) if "llm_news_score" in inputs.columns else INVESTOR
    out["investor"] = view_frame("investor", inputs, group, investor)
    out["market"] = view_frame("market", inputs, group, None if ml else TECHNICAL_FACTORS)
    return out
