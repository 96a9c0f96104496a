"""The brain: point-in-time features -> walk-forward model predictions -> regimes -> three views ->
ensemble, for every bar of every traded symbol, and the record of why.

``think`` is the pure part (frames in, decisions out; the registry is its only side effect) and is
what the look-ahead property test drives; ``think_from_store`` is the edge that reads the store,
scores headlines and caches features. Every row of a decision frame at time t is computed from data
known at t: features are point-in-time, a prediction at t comes from the model of t's walk-forward
window (trained on labels that ended before that window), regimes are causal, the views are
row-wise, and learned ensemble weights at t come from rows whose labels ended before t's period.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from hflite import logs
from hflite.ai.ensemble import EnsembleConfig, combine, learned_weights, period_starts, weights_at
from hflite.ai.regime import RegimeConfig, label_at, regimes
from hflite.ai.views import REGIME_SIGNAL, VIEWS, ViewFrame, all_views, asset_group
from hflite.ai.walkforward import WalkForwardConfig, WalkForwardResult, build_panel, walk_forward
from hflite.domain.instrument import Instrument
from hflite.features import FeatureConfig

Progress = Callable[[str, float], None]
_log = logs.get("hflite.ai")

#: Columns of a decision frame (per symbol, indexed by the bar's availability time).
DECISION_COLUMNS = (
    "score",
    "confidence",
    *(c for v in VIEWS for c in (v, f"{v}_conf")),
    "technical",
    "technical_conf",
    "technical_score",
    "prob_up",
    "exp_return",
    "regime",
    "model_id",
)
#: Columns of ``ai_decisions.csv``: the intent, then its symbol's decision row and each view's top
#: reasons (JSON lists of [factor, value, contribution]).
TRAIL_COLUMNS = (
    "intent_id",
    "ts",
    "symbol",
    *DECISION_COLUMNS,
    *(f"{v}_reasons" for v in (*VIEWS, "technical")),
)


class ModelConfig(BaseModel):
    """``[ai.model]``: the model family and its hyper-parameters (checked by the model)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    kind: Literal["linear", "random_forest", "lightgbm", "xgboost", "lstm", "gru"] = "lightgbm"
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    enabled: bool = Field(True, description="false: no model; the market view uses technicals only")


class SentimentConfig(BaseModel):
    """``[ai.sentiment]``: how headlines are scored (methods tried in this order)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    order: tuple[str, ...] = ("transformer", "finance", "lm", "vader")
    model_path: str = Field("", description="local FinBERT-style model folder for 'transformer'")


class AIConfig(BaseModel):
    """``[ai]``: features, model, walk-forward, regime, ensemble and sentiment settings."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    history_start: date = Field(date(2008, 1, 1), description="first day of data features and training read")
    registry_dir: str = "var/models"
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    walkforward: WalkForwardConfig = Field(default_factory=WalkForwardConfig)
    regime: RegimeConfig = Field(default_factory=RegimeConfig)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    sentiment: SentimentConfig = Field(default_factory=SentimentConfig)
    ablation: bool = Field(True, description="also backtest technical-only for the report's ablation")


@dataclass
class BrainResult:
    """Decisions per symbol and everything the report and ``hflite explain`` need to show why."""

    decisions: dict[str, pd.DataFrame]
    views: dict[str, dict[str, ViewFrame]]
    technical: dict[str, ViewFrame]
    regimes: pd.Series
    weights: pd.DataFrame | None
    wf: WalkForwardResult | None
    feature_key: str = ""
    data_versions: dict[str, str] = field(default_factory=dict)
    sentiment_method: str = ""
    warnings: list[str] = field(default_factory=list)
    closes: dict[str, pd.Series] = field(default_factory=dict)
    config: AIConfig | None = None
    llm_summaries: pd.DataFrame | None = None  # [llm] summarise: one row per ticker-day summarised

    def reasons(
        self, symbol: str, ts: pd.Timestamp, top: int = 3
    ) -> dict[str, list[tuple[str, float, float]]]:
        """Top factors of each view (and technical-only) at the bar of ``symbol`` known at ``ts``."""
        frame = self.decisions[symbol]
        k = int(frame.index.searchsorted(ts, side="right")) - 1
        if k < 0:
            return {}
        out = {v: vf.reasons(k, top) for v, vf in self.views[symbol].items()}
        out["technical"] = self.technical[symbol].reasons(k, top)
        return out

    def trail(
        self,
        symbols: list[str] | None = None,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """One row per symbol and bar in [start, end): every decision column plus each view's top
        reasons as JSON lists of [factor, value, contribution]."""
        frames = []
        for sym, frame in self.decisions.items():
            if symbols is not None and sym not in symbols:
                continue
            keep = np.ones(len(frame), bool)
            if start is not None:
                keep &= frame.index >= start
            if end is not None:
                keep &= frame.index < end
            rows = np.flatnonzero(keep)
            df = frame.iloc[rows].copy()
            df.insert(0, "symbol", sym)
            named = {**self.views[sym], "technical": self.technical[sym]}
            for v, vf in named.items():
                df[f"{v}_reasons"] = [json.dumps(vf.reasons(int(k))) for k in rows]
            frames.append(df.reset_index(names="ts"))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _regime_labels(index_close: pd.Series | None, bpy: float, cfg: RegimeConfig) -> pd.Series:
    if index_close is None or index_close.empty:
        return pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype=object, name="regime")
    return regimes(index_close, bpy, cfg)


def _predictions(
    frames: dict[str, pd.DataFrame],
    closes: dict[str, pd.Series],
    cfg: AIConfig,
    registry: Any,
    data_version: str,
    progress: Progress | None,
) -> WalkForwardResult | None:
    if not cfg.model.enabled:
        return None
    wf = cfg.walkforward
    panel = build_panel(frames, closes, wf.horizon, target=wf.target, meta_trend=wf.meta_trend)
    say = progress or (lambda _m, _f: None)
    return walk_forward(
        panel,
        cfg.model.kind,
        dict(cfg.model.params),
        cfg.walkforward,
        registry=registry,
        data_version=data_version or None,
        progress=lambda done, total: say(f"training {done}/{total}", done / max(total, 1)),
        seed=cfg.model.seed,
    )


def _inputs(
    sym: str,
    frame: pd.DataFrame,
    preds: pd.DataFrame | None,
    labels: pd.Series,
    extra: pd.Series | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Features plus the model's prediction, the regime and (when given) the LLM news summary,
    aligned on the symbol's bars."""
    out = frame.copy()
    if extra is not None:
        out[str(extra.name)] = extra.reindex(out.index).to_numpy(dtype=float)
    model_id = np.full(len(out), "", dtype=object)
    if preds is not None:
        mine = preds[preds["symbol"] == sym].set_index("ts")
        mine = mine[~mine.index.duplicated(keep="last")]
        aligned = mine.reindex(out.index)
        out["prob_up"] = aligned["prob_up"].to_numpy(dtype=float)
        out["exp_return"] = aligned["exp_return"].to_numpy(dtype=float)
        model_id = aligned["model_id"].fillna("").to_numpy(dtype=object)
    else:
        out["prob_up"] = np.nan
        out["exp_return"] = np.nan
    regime = label_at(labels, out.index.as_unit("ns").asi8)
    out["regime"] = regime
    out["regime_signal"] = np.array([REGIME_SIGNAL.get(r, np.nan) for r in regime], dtype=float)
    return out, model_id


def _view_panel(
    views: dict[str, dict[str, ViewFrame]],
    closes: dict[str, pd.Series],
    horizon: int,
    frames: dict[str, pd.DataFrame],
) -> pd.DataFrame:
    """Rows (ts, symbol) with view scores/confidences and the vol-scaled forward return."""
    parts = []
    for sym, vs in views.items():
        c = closes[sym].reindex(vs["market"].index)
        close = c.to_numpy(dtype=float)
        fwd = np.full(len(close), np.nan)
        end = np.full(len(close), np.datetime64("NaT"), dtype="datetime64[ns]")
        if len(close) > horizon:
            fwd[:-horizon] = np.log(close[horizon:] / close[:-horizon])
            end[:-horizon] = vs["market"].index.as_unit("ns").values[horizon:]
        vol = frames[sym]["vol_21"].reindex(vs["market"].index).to_numpy(dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            target = np.clip(fwd / (vol * np.sqrt(horizon / 252)), -3, 3)
        df = pd.DataFrame({"ts": vs["market"].index.tz_localize(None), "label_end": end, "target": target})
        for v in VIEWS:
            df[v] = vs[v].score
            df[f"{v}_conf"] = vs[v].confidence
        parts.append(df)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def think(
    frames: dict[str, pd.DataFrame],
    closes: dict[str, pd.Series],
    instruments: dict[str, Instrument],
    cfg: AIConfig,
    *,
    index_close: pd.Series | None = None,
    index_bars_per_year: float = 252.0,
    registry: Any = None,
    data_version: str = "",
    progress: Progress | None = None,
    llm_news: dict[str, pd.Series] | None = None,
) -> BrainResult:
    """Decisions for every bar of every symbol in ``frames`` (feature frames indexed by availability
    time) from point-in-time inputs only. ``llm_news`` (per symbol, on the same index) is the LLM's
    news summary score, an input of the investor view only (never of the model)."""
    say = progress or (lambda _m, _f: None)
    labels = _regime_labels(index_close, index_bars_per_year, cfg.regime)
    say("walk-forward training", 0.0)
    wf = _predictions(frames, closes, cfg, registry, data_version, progress)
    preds = wf.predictions if wf is not None else None
    say("views", 0.9)
    views: dict[str, dict[str, ViewFrame]] = {}
    technical: dict[str, ViewFrame] = {}
    extra: dict[str, tuple[pd.DataFrame, np.ndarray]] = {}
    for sym, frame in frames.items():
        inputs, model_id = _inputs(sym, frame, preds, labels, (llm_news or {}).get(sym))
        group = asset_group(instruments[sym])
        views[sym] = all_views(inputs, group)
        technical[sym] = all_views(inputs, group, ml=False)["market"]
        extra[sym] = (inputs, model_id)
    weights = None
    if cfg.ensemble.weights == "learned" and views:
        first = min(v["market"].index[0] for v in views.values() if len(v["market"].index))
        last = max(v["market"].index[-1] for v in views.values() if len(v["market"].index))
        starts = period_starts(first, last, cfg.walkforward.retrain)
        embargo = pd.Timedelta(days=int(np.ceil(cfg.walkforward.embargo_bars * 7 / 5)))
        panel = _view_panel(views, closes, cfg.walkforward.horizon, frames)
        weights = learned_weights(panel, starts, cfg.ensemble, embargo)
    decisions = {}
    for sym, vs in views.items():
        inputs, model_id = extra[sym]
        decisions[sym] = _decision_frame(vs, technical[sym], inputs, model_id, weights, cfg)
    return BrainResult(decisions, views, technical, labels, weights, wf, closes=closes, config=cfg)


def _decision_frame(
    vs: dict[str, ViewFrame],
    tech: ViewFrame,
    inputs: pd.DataFrame,
    model_id: np.ndarray,
    weights: pd.DataFrame | None,
    cfg: AIConfig,
) -> pd.DataFrame:
    index = vs["market"].index
    scores = np.column_stack([vs[v].score for v in VIEWS])
    confs = np.column_stack([vs[v].confidence for v in VIEWS])
    w = weights_at(weights, index, cfg.ensemble)
    score, conf = combine(scores, confs, w)
    # technical-only ablation: the market view without the model, alone (unknown where it has no say)
    tech_score = np.where(tech.confidence > 0, tech.score, np.nan)
    out = pd.DataFrame(index=index)
    out["score"], out["confidence"] = score, conf
    for j, v in enumerate(VIEWS):
        out[v], out[f"{v}_conf"] = scores[:, j], confs[:, j]
    out["technical"], out["technical_conf"] = tech.score, tech.confidence
    out["technical_score"] = tech_score
    out["prob_up"] = inputs["prob_up"].to_numpy(dtype=float)
    out["exp_return"] = inputs["exp_return"].to_numpy(dtype=float)
    out["regime"] = inputs["regime"].to_numpy(dtype=object)
    out["model_id"] = model_id
    return out


def registry_for(cfg: AIConfig, base: Path | None = None) -> Any:
    """The model registry of ``cfg.registry_dir`` (relative to ``base`` when given)."""
    from hflite.ai.registry import ModelRegistry

    root = Path(cfg.registry_dir)
    return ModelRegistry(root if root.is_absolute() or base is None else base / root)


# -- the edge: store -> brain ---------------------------------------------------------------------
def available_closes(store: Any, symbols: list[str], start: Any, end: Any) -> dict[str, pd.Series]:
    """Daily closes of ``symbols`` indexed by the time each bar became known (UTC)."""
    from hflite.domain.instrument import instrument_for
    from hflite.engine.market import available_at

    out = {}
    for sym in symbols:
        bars = store.read_bars(sym, "1d", start, end)
        ts = pd.DatetimeIndex(bars["ts"])
        known, _ = available_at(instrument_for(sym), "1d", ts)
        out[sym] = pd.Series(bars["close"].to_numpy(dtype=float), index=pd.to_datetime(known, utc=True))
    return out


def _with_fundamentals(store: Any, symbol: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The feature frame plus the banker view's fundamentals, when the store has any."""
    from hflite.ai.fundamentals import fundamental_columns
    from hflite.data.store import DataNotFoundError

    try:
        fund = store.read_fundamentals(symbol)
    except DataNotFoundError:
        return frame
    return frame.join(fundamental_columns(fund, pd.DatetimeIndex(frame.index)))


def think_from_store(
    store: Any,
    cfg: AIConfig,
    symbols: list[str],
    instruments: dict[str, Instrument],
    *,
    start: Any,
    end: Any,
    base_dir: Path | None = None,
    progress: Progress | None = None,
    llm: Any = None,
) -> BrainResult:
    """Build (or load cached) features from the store, then ``think``. Walk-forward test windows
    start at the run's ``start`` unless ``[ai.walkforward] start`` is set. With ``llm`` (an
    ``LLMService`` whose config has ``summarise`` on), each day's ticker headlines are summarised by
    the model into an extra investor-view input (``BrainResult.llm_summaries`` holds the table)."""
    from hflite.ai.feature_cache import build_features
    from hflite.ai.sentiment import Analyzer
    from hflite.data.store import DataNotFoundError

    say = progress or (lambda _m, _f: None)
    analyzer = Analyzer(order=cfg.sentiment.order, model_path=cfg.sentiment.model_path or None)
    say("features", 0.0)
    fs = build_features(store, symbols, cfg.history_start, end, cfg.features, scorer=analyzer.scores)
    closes = available_closes(store, symbols, cfg.history_start, end)
    index_close = None
    try:
        index_close = available_closes(store, [cfg.regime.index], cfg.history_start, end)[cfg.regime.index]
    except DataNotFoundError:
        fs.warnings.append(f"ai.regime: no daily bars of {cfg.regime.index}; regimes unknown")
    if cfg.walkforward.start is None:  # validated, so the bound is a UTC datetime like a configured one
        wf = type(cfg.walkforward).model_validate({**cfg.walkforward.model_dump(), "start": start})
        cfg = cfg.model_copy(update={"walkforward": wf})
    frames = {s: _with_fundamentals(store, s, fs.frames[s]) for s in symbols}
    llm_news, summaries = None, None
    if llm is not None and llm.cfg.summarise:
        llm_news, summaries = _summaries(store, llm, frames, analyzer.scores, start, end, say)
    brain = think(
        frames,
        closes,
        instruments,
        cfg,
        index_close=index_close,
        registry=registry_for(cfg, base_dir),
        data_version=fs.key,
        progress=progress,
        llm_news=llm_news,
    )
    brain.llm_summaries = summaries
    brain.feature_key = fs.key
    brain.data_versions = dict(fs.data_versions)
    brain.sentiment_method = getattr(fs, "scorer", "") or ""
    brain.warnings = list(fs.warnings) + brain.warnings
    return brain


def _summaries(
    store: Any,
    llm: Any,
    frames: dict[str, pd.DataFrame],
    scorer: Callable[[list[str]], np.ndarray],
    start: Any,
    end: Any,
    say: Progress,
) -> tuple[dict[str, pd.Series], pd.DataFrame]:
    """The LLM's summary of each day's ticker headlines inside the run's window."""
    from hflite.ai.llm.passes import summarise_news
    from hflite.data.store import DataNotFoundError

    s, e = pd.Timestamp(start), pd.Timestamp(end) + pd.Timedelta(days=1)
    try:
        news = store.read_news(list(frames), s, e)
    except DataNotFoundError:
        news = pd.DataFrame(columns=["ts", "tickers", "headline"])
    index = {sym: pd.DatetimeIndex(f.index[(f.index >= s) & (f.index < e)]) for sym, f in frames.items()}
    say("LLM news summaries", 0.05)
    return summarise_news(llm, news, index, scorer, progress=lambda d, t: say(f"LLM summaries {d}/{t}", 0.05))
