"""ML models that predict, from the features known at a bar, the next ``horizon`` bars' return: its
SIGN (a calibrated probability of up) and its SIZE (the expected log return, from a regressor of the
same family).

Kinds: ``linear`` (logistic regression + ridge over median-imputed, standardised features),
``random_forest``, ``lightgbm``, ``xgboost`` (both with native NaN handling) and, with the optional
PyTorch extra, ``lstm`` and ``gru`` over the last ``seq_len`` feature rows of each symbol. Every kind
is one :class:`Model`, chosen by name through :func:`make_model`, deterministic given its seed.

Probabilities are calibrated (Platt or isotonic) on a held-out, time-ordered tail of the training
rows; rows whose label reaches into that tail are purged from the part the classifier is fitted on.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    import torch

__all__ = [
    "MODEL_KINDS",
    "Model",
    "ModelParamsError",
    "ModelUnavailable",
    "Prediction",
    "make_model",
    "model_params",
]

#: The model kinds :func:`make_model` knows.
MODEL_KINDS: tuple[str, ...] = ("linear", "random_forest", "lightgbm", "xgboost", "lstm", "gru")
TORCH_HINT = "pip install torch==2.13.0 (or the hflite[torch] extra)"
_MIN_CALIB_ROWS = 50  # fewer held-out rows than this (or one class only): no calibration
_EPS = 1e-6


class ModelUnavailable(ImportError):
    """An optional library a model kind needs is not installed; the message says what to install."""


class ModelParamsError(ValueError):
    """Hyper-parameters that a model kind does not know or does not accept; the message names them."""


# ---------------------------------------------------------------------------------------------------
# hyper-parameters: one frozen pydantic class per kind, unknown keys refused


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: how the classifier's scores become probabilities, fitted on the held-out tail
    calibration: Literal["sigmoid", "isotonic", "none"] = "sigmoid"
    #: share of the training rows (the latest ones) held out for calibration
    calib_frac: float = Field(0.2, ge=0.05, le=0.5)
    #: at most this many labelled training rows, a seeded uniform sample (None: all of them)
    max_train_rows: int | None = Field(None, ge=100)


class LinearParams(_Params):
    C: float = Field(0.1, gt=0)  # inverse L2 strength of the logistic regression
    alpha: float = Field(10.0, ge=0)  # L2 strength of the ridge
    max_iter: int = Field(1000, ge=10)


class RandomForestParams(_Params):
    max_train_rows: int | None = Field(30_000, ge=100)
    n_estimators: int = Field(200, ge=1, le=5000)
    max_depth: int | None = Field(8, ge=1)
    min_samples_leaf: int = Field(50, ge=1)
    max_features: float = Field(0.3, gt=0, le=1)
    max_samples: float | None = Field(0.5, gt=0, le=1)  # bootstrap share of the rows per tree
    n_jobs: int = Field(1, ge=-1)  # results do not depend on it


class LightGBMParams(_Params):
    max_train_rows: int | None = Field(30_000, ge=100)
    n_estimators: int = Field(100, ge=1, le=10000)
    num_leaves: int = Field(15, ge=2, le=4096)
    learning_rate: float = Field(0.05, gt=0, le=1)
    min_child_samples: int = Field(50, ge=1)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(1.0, gt=0, le=1)
    lambda_l2: float = Field(1.0, ge=0)
    max_bin: int = Field(63, ge=3, le=1023)
    bin_sample_rows: int = Field(20000, ge=1000)  # rows sampled to place the bin edges
    num_threads: int = Field(1, ge=1)  # results do not depend on it (tested)


class XGBoostParams(_Params):
    max_train_rows: int | None = Field(30_000, ge=100)
    n_estimators: int = Field(100, ge=1, le=10000)
    max_depth: int = Field(4, ge=1, le=20)
    learning_rate: float = Field(0.05, gt=0, le=1)
    min_child_weight: float = Field(10.0, ge=0)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0)
    max_bin: int = Field(64, ge=2, le=1024)
    nthread: int = Field(1, ge=1)  # results do not depend on it (tested)


class RecurrentParams(_Params):
    seq_len: int = Field(20, ge=1, le=500)  # feature rows per sequence: this one and the seq_len-1 before
    hidden: int = Field(32, ge=2, le=512)
    epochs: int = Field(5, ge=1, le=500)
    batch_size: int = Field(256, ge=8)
    learning_rate: float = Field(2e-3, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    return_weight: float = Field(1.0, ge=0)  # weight of the size head's loss against the sign head's
    min_steps: int = Field(100, ge=0)  # more epochs than ``epochs`` when a small window gives fewer steps
    num_threads: int = Field(1, ge=1)  # torch threads while fitting/predicting (restored after)


def _validate(kind: str, cls: type[_Params], params: Mapping[str, Any] | None) -> _Params:
    given = dict(params or {})
    unknown = sorted(set(given) - set(cls.model_fields))
    if unknown:
        raise ModelParamsError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for model kind {kind!r}; "
            f"allowed: {', '.join(sorted(cls.model_fields))}"
        )
    try:
        return cls(**given)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ModelParamsError(f"bad parameter for model kind {kind!r}: {problems}") from None


# ---------------------------------------------------------------------------------------------------
# what a model sees: the feature matrix, each row's group (symbol) and time


@dataclass(frozen=True)
class _Design:
    values: np.ndarray  # (n, f) float64
    groups: np.ndarray  # (n,) int: symbol codes (all 0 without a symbol level)
    ts: np.ndarray | None  # (n,) int64 ns, or None when the index carries no time


def _design(X: pd.DataFrame, features: list[str]) -> _Design:
    missing = [c for c in features if c not in X.columns]
    if missing:
        raise ValueError(f"features missing from X: {missing}")
    values = X[features].to_numpy(dtype=np.float64, copy=True)
    index = X.index
    ts: pd.Index | None = None
    groups = np.zeros(len(X), dtype=np.int64)
    if isinstance(index, pd.MultiIndex):
        names = list(index.names)
        ts = index.get_level_values(names.index("ts") if "ts" in names else 0)
        if "symbol" in names:
            groups = pd.factorize(index.get_level_values("symbol"))[0].astype(np.int64)
    elif isinstance(index, pd.DatetimeIndex):
        ts = index
    ts_ns = None
    if isinstance(ts, pd.DatetimeIndex):
        ts_ns = ts.as_unit("ns").asi8.copy()
    return _Design(values, groups, ts_ns)


def _as_array(y: Any, n: int, what: str) -> np.ndarray:
    out = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(out) != n:
        raise ValueError(f"{what} has {len(out)} values for {n} rows of X")
    return out


def _ns(values: Any, n: int) -> np.ndarray | None:
    """Label ends as int64 ns (NaT -> int64 max, so it is never before anything), or None."""
    if values is None:
        return None
    idx = pd.DatetimeIndex(values)
    if len(idx) != n:
        raise ValueError(f"label_end has {len(idx)} values for {n} rows of X")
    out = idx.as_unit("ns").asi8.copy()
    out[idx.isna()] = np.iinfo(np.int64).max
    return out


def _calibration_split(
    d: _Design, known: np.ndarray, label_end: np.ndarray | None, frac: float
) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, calibration rows): the calibration rows are the latest ``frac`` of the known rows
    (by time); fit rows are those before them whose label ends before the first calibration time."""
    rows = np.flatnonzero(known)
    if d.ts is None:
        cut = int(len(rows) * (1 - frac))
        return rows[:cut], rows[cut:]
    t = d.ts[rows]
    cut_ts = np.sort(t)[int(len(rows) * (1 - frac))]
    calib = rows[t >= cut_ts]
    before = t < cut_ts
    if label_end is not None:
        before &= label_end[rows] < cut_ts
    return rows[before], calib


class _Calibrator:
    """Raw probability -> calibrated probability: Platt (sigmoid of a line in the logit), isotonic,
    or the identity."""

    def __init__(self, method: str, raw: np.ndarray | None = None, y: np.ndarray | None = None) -> None:
        self.method = "none" if raw is None or y is None else method
        self.a, self.b = 1.0, 0.0
        self.iso: Any = None
        if raw is None or y is None:
            return
        if method == "sigmoid":
            self.a, self.b = _platt(_logit(raw), y)
        elif method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            self.iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        if self.method == "sigmoid":
            return _sigmoid(self.a * _logit(raw) + self.b)
        if self.method == "isotonic":
            return np.clip(np.asarray(self.iso.predict(raw), dtype=np.float64), 0.0, 1.0)
        return np.clip(raw, 0.0, 1.0)


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1 - _EPS)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1 + np.tanh(0.5 * z)), dtype=np.float64)


def _platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt's fit of p = sigmoid(a z + b) by Newton's method, on his smoothed targets (which keep
    the optimum finite even when the classes separate)."""
    pos = float(y.sum())
    neg = len(y) - pos
    t = np.where(y > 0.5, (pos + 1) / (pos + 2), 1 / (neg + 2))
    if np.ptp(z) < 1e-12:
        return 0.0, float(_logit(np.array([t.mean()]))[0])
    a, b = 1.0, 0.0
    for _ in range(100):
        p = _sigmoid(a * z + b)
        w = p * (1 - p) + 1e-12
        g = np.array([np.dot(p - t, z), np.sum(p - t)])
        h = np.array([[np.dot(w, z * z), np.dot(w, z)], [np.dot(w, z), w.sum()]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if not np.isfinite([a, b]).all():
            return 1.0, 0.0
        if np.abs(step).max() < 1e-10:
            break
    return float(a), float(b)


def _normalise(values: np.ndarray) -> np.ndarray:
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, None)
    total = v.sum()
    return v / total if total > 0 else np.full(len(v), 1.0 / max(len(v), 1))


# ---------------------------------------------------------------------------------------------------
# the model protocol


@dataclass(frozen=True)
class Prediction:
    """A model's output for each row of X: the calibrated probability that the forward return is
    positive and the expected forward log return."""

    prob_up: np.ndarray
    exp_return: np.ndarray
    index: pd.Index

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"prob_up": self.prob_up, "exp_return": self.exp_return}, index=self.index)


class Model(ABC):
    """One kind of model: a classifier for the sign and a regressor for the size of the forward
    return, fitted on one training window. Subclasses implement the three ``_`` hooks."""

    kind: ClassVar[str]
    #: whether fits of several models may run at once in threads of one process
    thread_safe: ClassVar[bool] = True
    _params_cls: ClassVar[type[_Params]]

    def __init__(self, params: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        self._p = _validate(self.kind, self._params_cls, params)
        self.seed = int(seed)
        self.features: list[str] = []
        self._calibrator: _Calibrator | None = None
        self._importance: np.ndarray | None = None

    @property
    def params(self) -> dict[str, Any]:
        """Every hyper-parameter, defaults included."""
        return self._p.model_dump()

    @property
    def context_rows(self) -> int:
        """Earlier rows of each symbol that :meth:`predict` needs before the first row it predicts
        (0 for the row-wise kinds; ``seq_len - 1`` for the recurrent ones)."""
        return 0

    @property
    def fitted(self) -> bool:
        return self._calibrator is not None

    def fit(self, X: pd.DataFrame, y_up: Any, y_ret: Any, label_end: Any = None) -> Self:
        """Fit on the training rows of X (index ``(ts, symbol)`` or ``ts``; float columns).

        ``y_up`` is 1.0 for a positive forward return; rows without a label (NaN) are used as
        sequence context only. ``label_end`` (each row's label end time) purges the rows whose label
        overlaps the calibration tail; without it only the time order separates them.
        """
        self.features = [str(c) for c in X.columns]
        d = _design(X, self.features)
        up, ret = _as_array(y_up, len(X), "y_up"), _as_array(y_ret, len(X), "y_ret")
        known = self._sample(np.isfinite(up) & np.isfinite(ret))
        if known.sum() < 2 or len(np.unique(up[known])) < 2:
            raise ValueError(f"{self.kind}: the training rows need labels of both signs (have {known.sum()})")
        fit_rows, calib_rows = np.flatnonzero(known), np.empty(0, dtype=np.int64)
        if self._p.calibration != "none":
            f_rows, c_rows = _calibration_split(d, known, _ns(label_end, len(X)), self._p.calib_frac)
            usable = len(c_rows) >= _MIN_CALIB_ROWS and len(np.unique(up[c_rows])) == 2
            if usable and len(np.unique(up[f_rows])) == 2:
                fit_rows, calib_rows = f_rows, c_rows
        self._fit(d, up, ret, fit_rows, np.flatnonzero(known))
        if len(calib_rows):
            raw, _ = self._predict_raw(d, calib_rows)
            self._calibrator = _Calibrator(self._p.calibration, raw, up[calib_rows])
        else:
            self._calibrator = _Calibrator("none")
        self._importance = _normalise(self._importances(d, up, calib_rows))
        return self

    def _sample(self, known: np.ndarray) -> np.ndarray:
        """The labelled rows to train on: all, or ``max_train_rows`` of them drawn with the seed."""
        cap = self._p.max_train_rows
        rows = np.flatnonzero(known)
        if cap is None or len(rows) <= cap:
            return known
        keep = np.zeros_like(known)
        keep[np.random.default_rng(self.seed).choice(rows, cap, replace=False)] = True
        return keep

    def predict(self, X: pd.DataFrame) -> Prediction:
        """Calibrated probability of up and expected return for every row of X (columns by name)."""
        if self._calibrator is None:
            raise RuntimeError(f"{self.kind} model is not fitted")
        d = _design(X, self.features)
        rows = np.arange(len(X))
        raw, ret = self._predict_raw(d, rows)
        return Prediction(self._calibrator(raw), np.asarray(ret, dtype=np.float64), X.index)

    def feature_importance(self) -> pd.Series:
        """Importance per feature, normalised to sum to 1 (native gain, |coef| or permutation)."""
        if self._importance is None:
            raise RuntimeError(f"{self.kind} model is not fitted")
        return pd.Series(self._importance, index=pd.Index(self.features, name="feature"), name="importance")

    @abstractmethod
    def _fit(
        self, d: _Design, up: np.ndarray, ret: np.ndarray, fit_rows: np.ndarray, train_rows: np.ndarray
    ) -> None:
        """Fit the classifier on ``fit_rows`` and the regressor (on ``train_rows`` or ``fit_rows``)."""

    @abstractmethod
    def _predict_raw(self, d: _Design, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(uncalibrated probability of up, expected return) for ``rows`` of the design."""

    @abstractmethod
    def _importances(self, d: _Design, up: np.ndarray, calib_rows: np.ndarray) -> np.ndarray:
        """Unnormalised importance per feature."""


# ---------------------------------------------------------------------------------------------------
# the row-wise kinds


class LinearModel(Model):
    """Logistic regression (sign) and ridge (size) over median-imputed, standardised features; the
    imputer and scaler are fitted on the training rows only."""

    kind = "linear"
    _params_cls = LinearParams

    def _fit(
        self, d: _Design, up: np.ndarray, ret: np.ndarray, fit_rows: np.ndarray, train_rows: np.ndarray
    ) -> None:
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.preprocessing import StandardScaler

        p = self._p
        assert isinstance(p, LinearParams)
        self._imputer = SimpleImputer(strategy="median", keep_empty_features=True).fit(d.values[train_rows])
        self._scaler = StandardScaler().fit(self._imputer.transform(d.values[train_rows]))
        z = self._transform(d.values)
        self._clf = LogisticRegression(C=p.C, max_iter=p.max_iter, random_state=self.seed)
        self._clf.fit(z[fit_rows], up[fit_rows])
        self._reg = Ridge(alpha=p.alpha).fit(z[train_rows], ret[train_rows])

    def _transform(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(self._scaler.transform(self._imputer.transform(values)), dtype=np.float64)

    def _predict_raw(self, d: _Design, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = self._transform(d.values[rows])
        return self._clf.predict_proba(z)[:, 1], self._reg.predict(z)

    def _importances(self, d: _Design, up: np.ndarray, calib_rows: np.ndarray) -> np.ndarray:
        return np.abs(self._clf.coef_[0])


class RandomForestModel(Model):
    """scikit-learn random forests (classifier and regressor), NaNs handled natively."""

    kind = "random_forest"
    _params_cls = RandomForestParams

    def _fit(
        self, d: _Design, up: np.ndarray, ret: np.ndarray, fit_rows: np.ndarray, train_rows: np.ndarray
    ) -> None:
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        p = self._p
        assert isinstance(p, RandomForestParams)
        common = {
            "n_estimators": p.n_estimators,
            "max_depth": p.max_depth,
            "min_samples_leaf": p.min_samples_leaf,
            "max_features": p.max_features,
            "max_samples": p.max_samples,
            "bootstrap": True,
            "n_jobs": p.n_jobs,
            "random_state": self.seed,
        }
        self._clf = RandomForestClassifier(**common).fit(d.values[fit_rows], up[fit_rows])
        self._reg = RandomForestRegressor(**common).fit(d.values[train_rows], ret[train_rows])

    def _predict_raw(self, d: _Design, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = d.values[rows]
        return self._clf.predict_proba(x)[:, 1], self._reg.predict(x)

    def _importances(self, d: _Design, up: np.ndarray, calib_rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._clf.feature_importances_, dtype=np.float64)


class LightGBMModel(Model):
    """LightGBM boosted trees, deterministic (fixed seeds, ``deterministic=True``, fixed threads).

    The bin edges are placed once per fit, on all the training rows, and shared by both boosters.
    """

    kind = "lightgbm"
    _params_cls = LightGBMParams

    def _booster_params(self, objective: str) -> dict[str, Any]:
        p = self._p
        assert isinstance(p, LightGBMParams)
        return {
            "objective": objective,
            "num_leaves": p.num_leaves,
            "learning_rate": p.learning_rate,
            "min_data_in_leaf": p.min_child_samples,
            "feature_fraction": p.feature_fraction,
            "bagging_fraction": p.bagging_fraction,
            "bagging_freq": 1 if p.bagging_fraction < 1 else 0,
            "lambda_l2": p.lambda_l2,
            "deterministic": True,
            "force_col_wise": True,
            "seed": self.seed,
            **self._dataset_params(),
        }

    def _dataset_params(self) -> dict[str, Any]:
        p = self._p
        assert isinstance(p, LightGBMParams)
        return {
            "max_bin": p.max_bin,
            "bin_construct_sample_cnt": p.bin_sample_rows,
            "data_random_seed": self.seed,
            "num_threads": p.num_threads,
            "verbose": -1,
        }

    def _fit(
        self, d: _Design, up: np.ndarray, ret: np.ndarray, fit_rows: np.ndarray, train_rows: np.ndarray
    ) -> None:
        import lightgbm as lgb

        p = self._p
        assert isinstance(p, LightGBMParams)
        names = [f"f{j}" for j in range(d.values.shape[1])]
        full = lgb.Dataset(
            d.values[train_rows], label=ret[train_rows], feature_name=names, params=self._dataset_params(),
            free_raw_data=False,
        ).construct()  # fmt: skip
        # the classifier's rows as a subset of the binned data: no second binning pass
        part = full.subset(np.searchsorted(train_rows, fit_rows).tolist()).construct()
        part.set_label(up[fit_rows])
        self._clf = lgb.train(self._booster_params("binary"), part, p.n_estimators).free_dataset()
        self._reg = lgb.train(self._booster_params("regression"), full, p.n_estimators).free_dataset()

    def _predict_raw(self, d: _Design, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = d.values[rows]
        p = self._p
        assert isinstance(p, LightGBMParams)
        return (
            np.asarray(self._clf.predict(x, num_threads=p.num_threads), dtype=np.float64),
            np.asarray(self._reg.predict(x, num_threads=p.num_threads), dtype=np.float64),
        )

    def _importances(self, d: _Design, up: np.ndarray, calib_rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._clf.feature_importance(importance_type="gain"), dtype=np.float64)


class XGBoostModel(Model):
    """XGBoost ``hist`` boosted trees, NaNs handled natively, fixed seed and threads."""

    kind = "xgboost"
    _params_cls = XGBoostParams

    def _booster_params(self, objective: str) -> dict[str, Any]:
        p = self._p
        assert isinstance(p, XGBoostParams)
        return {
            "objective": objective,
            "tree_method": "hist",
            "max_depth": p.max_depth,
            "eta": p.learning_rate,
            "min_child_weight": p.min_child_weight,
            "subsample": p.subsample,
            "colsample_bytree": p.colsample_bytree,
            "lambda": p.reg_lambda,
            "max_bin": p.max_bin,
            "nthread": p.nthread,
            "seed": self.seed,
            "verbosity": 0,
        }

    def _fit(
        self, d: _Design, up: np.ndarray, ret: np.ndarray, fit_rows: np.ndarray, train_rows: np.ndarray
    ) -> None:
        import xgboost as xgb

        p = self._p
        assert isinstance(p, XGBoostParams)
        dfit = xgb.DMatrix(d.values[fit_rows], label=up[fit_rows], missing=np.nan, nthread=p.nthread)
        self._clf = xgb.train(self._booster_params("binary:logistic"), dfit, p.n_estimators)
        dall = xgb.DMatrix(d.values[train_rows], label=ret[train_rows], missing=np.nan, nthread=p.nthread)
        self._reg = xgb.train(self._booster_params("reg:squarederror"), dall, p.n_estimators)

    def _predict_raw(self, d: _Design, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = d.values[rows]
        return (
            np.asarray(self._clf.inplace_predict(x, missing=np.nan), dtype=np.float64),
            np.asarray(self._reg.inplace_predict(x, missing=np.nan), dtype=np.float64),
        )

    def _importances(self, d: _Design, up: np.ndarray, calib_rows: np.ndarray) -> np.ndarray:
        gain = self._clf.get_score(importance_type="total_gain")
        return np.array([gain.get(f"f{j}", 0.0) for j in range(d.values.shape[1])], dtype=np.float64)


# ---------------------------------------------------------------------------------------------------
# the recurrent kinds (optional: PyTorch)


def _import_torch() -> Any:
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        raise ModelUnavailable(f"the lstm and gru models need PyTorch: {TORCH_HINT}") from exc


@contextmanager
def _torch_threads(n: int) -> Iterator[Any]:
    """torch, with ``n`` intra-op threads until the block ends (small nets run faster on one)."""
    torch = _import_torch()
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield torch
    finally:
        torch.set_num_threads(before)


def _sequence_starts(
    groups: np.ndarray, ts: np.ndarray | None, seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): where each row's sequence starts in the padded matrix built by
    :func:`_padded`. Rows are grouped by symbol, in time order within each group, each group led by
    ``seq_len - 1`` padding rows."""
    key = ts if ts is not None else np.arange(len(groups))
    order = np.lexsort((key, groups))
    g = groups[order]
    first = np.r_[True, g[1:] != g[:-1]]
    group_no = np.cumsum(first) - 1  # 0, 1, ... per group in order
    starts = np.empty(len(groups), dtype=np.int64)
    starts[order] = np.arange(len(groups)) + group_no * (seq_len - 1)
    return order, starts


def _padded(z: np.ndarray, order: np.ndarray, groups: np.ndarray, seq_len: int) -> np.ndarray:
    """The rows of z grouped as in :func:`_sequence_starts`, each group led by zero rows."""
    g = groups[order]
    first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    pad = np.zeros((seq_len - 1, z.shape[1]), dtype=z.dtype)
    pieces: list[np.ndarray] = []
    bounds = [*first.tolist(), len(order)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        pieces += [pad, z[order[a:b]]]
    return np.concatenate(pieces) if pieces else np.zeros((0, z.shape[1]), dtype=z.dtype)


class RecurrentModel(Model):
    """An LSTM or GRU over the last ``seq_len`` standardised feature rows of each symbol, with two
    heads: the logit of up and the (scaled) forward return. Importance: permutation importance (the
    rise in log loss) on the calibration tail."""

    cell: ClassVar[str]
    thread_safe = False  # torch's thread count is process-wide
    _params_cls = RecurrentParams

    def __init__(self, params: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        if importlib.util.find_spec("torch") is None:
            raise ModelUnavailable(f"model kind {self.kind!r} needs PyTorch: {TORCH_HINT}")
        super().__init__(params, seed)
        self._net: Any = None

    @property
    def context_rows(self) -> int:
        p = self._p
        assert isinstance(p, RecurrentParams)
        return p.seq_len - 1

    def architecture(self) -> dict[str, Any]:
        """What rebuilds the network before its weights are loaded (stored in the registry's meta)."""
        p = self._p
        assert isinstance(p, RecurrentParams)
        return {"cell": self.cell, "n_features": len(self.features), "hidden": p.hidden, "layers": 1}

    def net_state(self) -> dict[str, torch.Tensor]:
        if self._net is None:
            raise RuntimeError(f"{self.kind} model is not fitted")
        return dict(self._net.state_dict())

    def without_net(self) -> RecurrentModel:
        """A shallow copy without the network (what the registry pickles beside ``model.pt``)."""
        shell = copy.copy(self)
        shell._net = None
        return shell

    def attach_net(self, state: Mapping[str, Any]) -> None:
        """Rebuild the network from :meth:`architecture` and load ``state`` into it."""
        net = _build_net(self.architecture())
        net.load_state_dict(dict(state))
        net.eval()
        self._net = net

    def _standardise(self, values: np.ndarray) -> np.ndarray:
        filled = np.where(np.isnan(values), self._median, values)
        z = (filled - self._mean) / self._std
        return np.clip(z, -5.0, 5.0).astype(np.float32)

    def _fit(
        self, d: _Design, up: np.ndarray, ret: np.ndarray, fit_rows: np.ndarray, train_rows: np.ndarray
    ) -> None:
        p = self._p
        assert isinstance(p, RecurrentParams)
        with _torch_threads(p.num_threads) as torch:
            self._fit_net(torch, d, up, ret, fit_rows, train_rows)

    def _fit_net(
        self, torch: Any, d: _Design, up: np.ndarray, ret: np.ndarray, fit_rows: np.ndarray,
        train_rows: np.ndarray,
    ) -> None:  # fmt: skip
        p = self._p
        assert isinstance(p, RecurrentParams)
        train = d.values[train_rows]
        with np.errstate(all="ignore"):
            med = np.nanmedian(np.where(np.isnan(train).all(axis=0), 0.0, train), axis=0)
        self._median = np.nan_to_num(med)
        filled = np.where(np.isnan(train), self._median, train)
        self._mean, std = filled.mean(axis=0), filled.std(axis=0)
        self._std = np.where(std > 1e-12, std, 1.0)
        scale = float(np.std(ret[fit_rows]))
        self._ret_scale = scale if scale > 0 else 1.0
        order, starts = _sequence_starts(d.groups, d.ts, p.seq_len)
        xs = _padded(self._standardise(d.values), order, d.groups, p.seq_len)
        offsets = np.arange(p.seq_len)
        y_up = torch.from_numpy(up.astype(np.float32))
        y_ret = torch.from_numpy(np.clip(np.nan_to_num(ret) / self._ret_scale, -5, 5).astype(np.float32))
        rng = np.random.default_rng(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = _build_net(self.architecture())
            opt = torch.optim.Adam(net.parameters(), lr=p.learning_rate, weight_decay=p.weight_decay)
            bce, mse = torch.nn.BCEWithLogitsLoss(), torch.nn.MSELoss()
            net.train()
            batches = -(-len(fit_rows) // p.batch_size)
            for _ in range(max(p.epochs, -(-p.min_steps // max(batches, 1)))):
                perm = rng.permutation(fit_rows)
                for a in range(0, len(perm), p.batch_size):
                    batch = perm[a : a + p.batch_size]
                    x = torch.from_numpy(xs[starts[batch][:, None] + offsets])
                    out = net(x)
                    ib = torch.from_numpy(batch)
                    loss = bce(out[:, 0], y_up[ib]) + p.return_weight * mse(out[:, 1], y_ret[ib])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        net.eval()
        self._net = net

    def _forward(self, xs: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self._p
        assert isinstance(p, RecurrentParams)
        offsets = np.arange(p.seq_len)
        logits, rets = [], []
        with _torch_threads(p.num_threads) as torch, torch.no_grad():
            for a in range(0, len(starts), 4096):
                out = self._net(torch.from_numpy(xs[starts[a : a + 4096][:, None] + offsets])).numpy()
                logits.append(out[:, 0].astype(np.float64))
                rets.append(out[:, 1].astype(np.float64))
        if not logits:
            return np.empty(0), np.empty(0)
        return _sigmoid(np.concatenate(logits)), np.concatenate(rets) * self._ret_scale

    def _predict_raw(self, d: _Design, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._net is None:
            raise RuntimeError(f"{self.kind} model has no network (load it through the registry)")
        p = self._p
        assert isinstance(p, RecurrentParams)
        order, starts = _sequence_starts(d.groups, d.ts, p.seq_len)
        xs = _padded(self._standardise(d.values), order, d.groups, p.seq_len)
        return self._forward(xs, starts[rows])

    def _importances(self, d: _Design, up: np.ndarray, calib_rows: np.ndarray) -> np.ndarray:
        n_features = d.values.shape[1]
        if len(calib_rows) == 0:
            return np.ones(n_features)
        p = self._p
        assert isinstance(p, RecurrentParams)
        calibrate = self._calibrator
        assert calibrate is not None
        z = self._standardise(d.values)
        order, starts = _sequence_starts(d.groups, d.ts, p.seq_len)
        y = up[calib_rows]

        def loss(zz: np.ndarray) -> float:
            raw, _ = self._forward(_padded(zz, order, d.groups, p.seq_len), starts[calib_rows])
            q = np.clip(calibrate(raw), _EPS, 1 - _EPS)
            return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

        base = loss(z)
        rng = np.random.default_rng(self.seed)
        out = np.empty(n_features)
        for j in range(n_features):
            zz = z.copy()
            zz[:, j] = rng.permutation(zz[:, j])
            out[j] = loss(zz) - base
        return out


class LSTMModel(RecurrentModel):
    """A one-layer LSTM (see :class:`RecurrentModel`)."""

    kind = "lstm"
    cell = "lstm"


class GRUModel(RecurrentModel):
    """A one-layer GRU (see :class:`RecurrentModel`)."""

    kind = "gru"
    cell = "gru"


def _build_net(arch: Mapping[str, Any]) -> Any:
    """The network for an architecture dict: one recurrent layer, then a linear layer of two heads."""
    torch = _import_torch()
    nn = torch.nn
    rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}[arch["cell"]]

    class _Net(nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.rnn = rnn_cls(
                arch["n_features"], arch["hidden"], num_layers=arch["layers"], batch_first=True
            )
            self.head = nn.Linear(arch["hidden"], 2)

        def forward(self, x: Any) -> Any:
            out, _ = self.rnn(x)
            return self.head(out[:, -1])

    return _Net()


# ---------------------------------------------------------------------------------------------------
# the factory

_KINDS: dict[str, type[Model]] = {
    "linear": LinearModel,
    "random_forest": RandomForestModel,
    "lightgbm": LightGBMModel,
    "xgboost": XGBoostModel,
    "lstm": LSTMModel,
    "gru": GRUModel,
}


def make_model(kind: str, params: Mapping[str, Any] | None = None, seed: int = 0) -> Model:
    """A new, unfitted model of ``kind`` (one of :data:`MODEL_KINDS`); unknown or bad parameters
    raise :class:`ModelParamsError` naming them; a missing optional library :class:`ModelUnavailable`."""
    try:
        cls = _KINDS[kind]
    except KeyError:
        raise ModelParamsError(
            f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}"
        ) from None
    return cls(params, seed)


def model_params(kind: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every hyper-parameter of ``kind`` with ``params`` over the defaults, validated (no torch needed)."""
    if kind not in _KINDS:
        raise ModelParamsError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    cls = _KINDS[kind]
    return _validate(kind, cls._params_cls, params).model_dump()
