"""The AI commands: ``hflite features build``, ``hflite train``, ``hflite models list`` and
``hflite sentiment``."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hflite.cli_errors import fail
from hflite.tables import Col, cell, print_table

features_app = typer.Typer(
    help="Point-in-time feature tables, cached in the store by data version.\n\n"
    "Example: hflite features build --config configs/demo.toml",
    no_args_is_help=True,
)
models_app = typer.Typer(
    help="The local model registry (walk-forward models, one entry per window).\n\n"
    "Example: hflite models list",
    no_args_is_help=True,
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a setting: section.key=value (repeatable), e.g. --set ai.model.kind=xgboost."
    ),
]
WideOpt = Annotated[
    bool, typer.Option("--wide", help="Show every column (lines may be wider than the terminal).")
]
DEFAULT_REGISTRY = Path("var/models")


def _console() -> Console:
    return Console()


_fail = fail  # one error line, plain text (hflite.cli_errors)


@contextmanager
def _store_errors() -> Iterator[None]:
    """A damaged data file or a store folder it cannot create: one ``error:`` line, not a traceback."""
    from hflite.data.store import StoreError

    try:
        yield
    except StoreError as exc:
        _fail(str(exc))


def _settings(config: Path | None, sets: list[str] | None, extra: dict[str, Any] | None = None) -> Any:
    from hflite.config import ConfigError, load_settings, parse_overrides

    overrides = parse_overrides(sets or [])
    for section, values in (extra or {}).items():
        node = overrides.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, dict):
                node.setdefault(key, {}).update(value)
            else:
                node[key] = value
    try:
        return load_settings(config, overrides, trades=False)
    except ConfigError as exc:
        _fail(str(exc))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


class ProgressBar:
    """A rich progress bar fed by (message, fraction) callbacks (hidden when not a terminal)."""

    def __enter__(self) -> ProgressBar:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        live = Console(stderr=True)
        self.bar = Progress(
            TextColumn("{task.description:<24}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=live,
            transient=True,
            disable=not live.is_terminal,
        )
        self.bar.__enter__()
        self.task = self.bar.add_task("starting", total=1.0)
        return self

    def __call__(self, message: str, fraction: float) -> None:
        self.bar.update(self.task, description=message, completed=fraction)

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)  # type: ignore[arg-type]


# -- features ------------------------------------------------------------------------------------
@features_app.command("build")
def features_build(config: ConfigOpt = None, sets: SetOpt = None) -> None:
    """Build (or load from the cache) the point-in-time feature tables of the run's symbols.

    A feature at time t uses only data known at t: bars by their close, macro series by their
    release lag, headlines by their time. Tables are cached under <data dir>/features/, keyed by
    the data versions read, the feature config and the code version.
    Example: hflite features build --config configs/demo.toml
    """
    from hflite.ai.feature_cache import build_features
    from hflite.ai.sentiment import Analyzer
    from hflite.engine.run import open_store

    settings = _settings(config, sets)
    ai = settings.ai
    analyzer = Analyzer(order=ai.sentiment.order, model_path=ai.sentiment.model_path or None)
    with _store_errors(), ProgressBar() as say:
        store = open_store(settings)
        fs = build_features(
            store,
            list(settings.run.symbols),
            ai.history_start,
            settings.run.end,
            ai.features,
            scorer=analyzer.scores,
            progress=say,
        )
    table = Table(title=f"features {fs.key[:12]} ({'cache hit' if fs.from_cache else 'built'})")
    for col in ("symbol", "rows", "first", "last", "columns", "known %"):
        table.add_column(col, justify="right" if col in ("rows", "columns", "known %") else "left")
    for sym, frame in fs.frames.items():
        if sym not in settings.run.symbols:
            continue
        known = float(frame.notna().to_numpy().mean() * 100) if len(frame) else 0.0
        first = f"{frame.index[0]:%Y-%m-%d}" if len(frame) else "—"
        last = f"{frame.index[-1]:%Y-%m-%d}" if len(frame) else "—"
        table.add_row(sym, str(len(frame)), first, last, str(frame.shape[1]), f"{known:.1f}")
    con = _console()
    con.print(table)
    groups = ", ".join(f"{g} {len(cols)}" for g, cols in fs.groups.items())
    con.print(f"Groups: {groups}. Headlines scored by: {getattr(fs, 'scorer', '') or 'n/a'}.")
    for w in fs.warnings:
        con.print(f"[yellow]warning:[/] {w}", highlight=False)
    con.print(f"Cache: [bold]{fs.path}[/]" if getattr(fs, "path", None) else "", highlight=False)


# -- train ---------------------------------------------------------------------------------------
def train(
    config: ConfigOpt = None,
    model: Annotated[
        str | None, typer.Option(help="linear, random_forest, lightgbm, xgboost, lstm or gru.")
    ] = None,
    sets: SetOpt = None,
    wide: WideOpt = False,
) -> None:
    """Walk-forward training: one model per window, purged and embargoed, each saved to the registry
    with its training window, features, hyper-parameters, data and code versions and OOS metrics.

    Test windows run from run.start (or ai.walkforward.start) to run.end; retraining follows
    ai.walkforward.retrain. A finished walk-forward with the same fingerprint is reused.
    Example: hflite train --model lightgbm --config configs/demo.toml
    """
    from hflite.ai.brain import available_closes, registry_for
    from hflite.ai.feature_cache import build_features
    from hflite.ai.sentiment import Analyzer
    from hflite.ai.walkforward import build_panel, walk_forward
    from hflite.engine.run import open_store

    extra = {"ai": {"model": {"kind": model}}} if model else None
    settings = _settings(config, sets, extra)
    ai = settings.ai
    bounds = {
        "start": ai.walkforward.start or settings.run.start,
        "end": ai.walkforward.end or settings.run.end,
    }
    wf_cfg = type(ai.walkforward).model_validate({**ai.walkforward.model_dump(), **bounds})
    symbols = list(settings.run.symbols)
    analyzer = Analyzer(order=ai.sentiment.order, model_path=ai.sentiment.model_path or None)
    with _store_errors(), ProgressBar() as say:
        store = open_store(settings)
        fs = build_features(
            store, symbols, ai.history_start, settings.run.end, ai.features, scorer=analyzer.scores
        )
        closes = available_closes(store, symbols, ai.history_start, settings.run.end)
        frames = {s: fs.frames[s] for s in symbols}
        panel = build_panel(
            frames, closes, wf_cfg.horizon, target=wf_cfg.target, meta_trend=wf_cfg.meta_trend
        )
        try:
            res = walk_forward(
                panel,
                ai.model.kind,
                dict(ai.model.params),
                wf_cfg,
                registry=registry_for(ai, Path.cwd()),
                data_version=fs.key,
                progress=lambda done, total: say(f"training {done}/{total}", done / max(total, 1)),
                seed=ai.model.seed,
            )
        except (ValueError, ImportError, RuntimeError) as exc:
            _fail(str(exc))
            return
    _print_windows(res, ai.model.kind, wide, Path(ai.registry_dir))


#: The walk-forward windows table of ``hflite train`` (the rest with --wide).
WINDOW_COLUMNS = (
    Col("window", "count"),
    Col("model_id", "id", default=False),
    Col("train_start", "date", default=False),
    Col("train_end", "date", default=False),
    Col("test_start", "date"),
    Col("test_end", "date"),
    Col("n_train", "count", default=False),
    Col("n_test", "count"),
    Col("n_scored", "count", default=False),
    Col("hit_rate", "number"),
    Col("auc", "number"),
    Col("brier", "number", default=False),
    Col("log_loss", "number", default=False),
    Col("ic", "number"),
    Col("fwd_ret_up", "number", default=False, digits=4),
    Col("fwd_ret_down", "number", default=False, digits=4),
)


def _print_windows(res: Any, kind: str, wide: bool = False, registry: Path = DEFAULT_REGISTRY) -> None:
    run_id = getattr(res, "run_id", None)
    rows = [{"window": i, **row} for i, row in enumerate(res.windows.to_dict("records"))]
    con = _console()
    print_table(con, WINDOW_COLUMNS, rows, wide=wide, title=f"walk-forward {kind}: {len(rows)} windows")
    summary = getattr(res, "summary", None) or {}
    if summary:
        con.print(_oos_overall(summary, getattr(res, "config", None)), highlight=False)
    if run_id:
        where = "" if registry == DEFAULT_REGISTRY else f" --registry {registry}"
        command = f"hflite models list --run {run_id}{where}"
        con.print(f"Models: {command}", highlight=False, markup=False, soft_wrap=True)  # one line to copy


_CI_KEYS = ("auc_lo", "auc_hi", "ic_lo", "ic_hi", "n_dates", "n_independent", "ci_block")


def _oos_overall(summary: dict[str, Any], config: Any = None) -> str:
    """The "OOS overall" line: every pooled metric, the AUC and IC with their block-bootstrap 95% CIs,
    the sessions scored and how many independent observations they are worth, and what the AUC's CI
    says in words (skill only when it excludes 0.5)."""
    from hflite.ai.walkforward import skill_words

    def ci(name: str) -> str:
        lo, hi = summary.get(f"{name}_lo"), summary.get(f"{name}_hi")
        if lo is None or hi is None:
            return ""
        return f" [95% CI {cell(lo, 'number')}, {cell(hi, 'number')}]"

    parts = []
    for k, v in summary.items():
        if k in _CI_KEYS:
            continue
        parts.append(
            f"{k} {cell(v, 'count' if k.startswith('n_') else 'number')}{ci(k) if k in ('auc', 'ic') else ''}"
        )
    head = "OOS overall"
    if config is not None and hasattr(config, "target"):
        head += f" (target {config.target}, horizon {config.horizon})"
    line = f"{head}: " + ", ".join(parts)
    if "n_dates" in summary:
        line += (
            f"; {cell(summary['n_dates'], 'count')} sessions, about "
            f"{cell(summary.get('n_independent'), 'count')} independent observations"
        )
    if "auc_lo" in summary:
        line += f"; {skill_words(float(summary['auc_lo']), float(summary['auc_hi']))}"
    return line + "."


#: The table of ``hflite models list``: the registry's columns (the rest with --wide).
MODEL_COLUMNS = (
    Col("id", "id"),
    Col("kind", "id", default=False),
    Col("created", "time", default=False),
    Col("train_start", "date", default=False),
    Col("train_end", "date", default=False),
    Col("test_start", "date"),
    Col("test_end", "date", default=False),
    Col("n_train", "count", default=False),
    Col("n_test", "count", default=False),
    Col("n_scored", "count", default=False),
    Col("n_features", "count", default=False),
    Col("hit_rate", "number"),
    Col("auc", "number"),
    Col("brier", "number", default=False),
    Col("log_loss", "number", default=False),
    Col("ic", "number", default=False),
    Col("fwd_ret_up", "number", default=False, digits=4),
    Col("fwd_ret_down", "number", default=False, digits=4),
    Col("run", "id", default=False),
    Col("window", "count", default=False),
    Col("data_version", "id", default=False),
    Col("code_version", "id", default=False),
)


@models_app.command("list")
def models_list(
    kind: Annotated[str | None, typer.Option(help="Only this model kind, e.g. lightgbm.")] = None,
    run: Annotated[str | None, typer.Option(help="Only the windows of this walk-forward run.")] = None,
    last: Annotated[int, typer.Option(help="Show at most this many entries (newest).")] = 30,
    registry: Annotated[Path, typer.Option(help="Registry folder.")] = DEFAULT_REGISTRY,
    wide: WideOpt = False,
) -> None:
    """List registered models: id (to name a model), test window and out-of-sample metrics; with
    --wide also the kind, training window, counts, run and data and code versions.

    Example: hflite models list --kind lightgbm --last 12
    """
    from hflite.ai.models import MODEL_KINDS
    from hflite.ai.registry import ModelRegistry

    if kind is not None and kind not in MODEL_KINDS:
        _fail(f"unknown kind {kind!r}: expected one of {', '.join(MODEL_KINDS)}")
    frame = ModelRegistry(registry).list() if registry.is_dir() else None  # listing creates no folder
    if frame is not None and kind:
        frame = frame[frame["kind"] == kind]
    if frame is not None and run:
        frame = frame[frame["run"] == run]
    con = _console()
    if frame is None or frame.empty:
        which = f"{kind} models" if kind else "models"
        which += f" of run {run}" if run else ""
        hint = "" if kind or run else " (train some with `hflite train --config configs/demo.toml`)"
        con.print(f"no {which} in {registry}{hint}", highlight=False, markup=False)
        return
    frame = frame.tail(last)
    title = f"models in {registry} ({len(frame)} shown)"
    print_table(con, MODEL_COLUMNS, frame.to_dict("records"), wide=wide, title=title)


# -- sentiment -----------------------------------------------------------------------------------
def _analyzer(method: str | None, model_path: Path | None) -> Any:
    """The analyzer of ``method`` (None: the fallback order), or an ``error:`` line saying why not."""
    from hflite.ai.sentiment import DEFAULT_ORDER, METHODS, Analyzer, MethodUnavailable

    if method is not None and method not in METHODS:
        _fail(f"unknown sentiment method {method!r}: expected one of {', '.join(METHODS)}")
    order = (method,) if method else DEFAULT_ORDER
    try:
        return Analyzer(order=order, model_path=str(model_path) if model_path else None)
    except MethodUnavailable as exc:
        _fail(str(exc))
    except Exception as exc:
        _fail(f"{type(exc).__name__}: {exc}")


def sentiment(
    text: Annotated[str | None, typer.Argument(help="A headline to score.")] = None,
    file: Annotated[Path | None, typer.Option(help="A text file: one headline per line.")] = None,
    out: Annotated[Path | None, typer.Option(help="CSV to write: text,label,score,method.")] = None,
    method: Annotated[
        str | None, typer.Option(help="finance, lm, vader or transformer (default: the fallback order).")
    ] = None,
    model_path: Annotated[
        Path | None, typer.Option(help="Local FinBERT-style model folder for the transformer method.")
    ] = None,
) -> None:
    """Score financial headlines: score in [-1, 1], label, the method that produced it, matched terms.

    Methods fall back in order: transformer (when a local model is given), finance (reads the
    direction of change of financial quantities: "net loss narrowed" is positive), Loughran-McDonald,
    VADER.
    Example: hflite sentiment "Fed signals three rate cuts as inflation cools"
    Example: hflite sentiment --file headlines.txt --out scores.csv
    """
    if (text is None) == (file is None):
        _fail("give one headline as an argument, or --file with one headline per line")
    analyzer = _analyzer(method, model_path)
    if text is not None:
        s = analyzer.score(text)
        table = Table(title="sentiment", show_header=False)
        table.add_column("field")
        table.add_column("value", overflow="fold")
        for k, v in (("text", s.text), ("score", f"{s.score:+.3f}"), ("label", s.label),
                     ("method", s.method), ("terms", ", ".join(s.terms) or "—")):  # fmt: skip
            table.add_row(k, v)
        _console().print(table)
        return
    assert file is not None
    if not file.is_file():
        _fail(f"--file: {file} not found")
    lines = [ln.strip() for ln in file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    scores = analyzer.score_many(lines)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label", "score", "method"])
            for s in scores:
                w.writerow([s.text, s.label, f"{s.score:.4f}", s.method])
    table = Table(title=f"sentiment of {len(scores)} headlines")
    for col in ("text", "label", "score", "method"):
        table.add_column(col, overflow="fold")
    for s in scores[:50]:
        table.add_row(s.text, s.label, f"{s.score:+.3f}", s.method)
    con = _console()
    con.print(table)
    if len(scores) > 50:
        con.print(f"... {len(scores) - 50} more")
    if out is not None:
        con.print(f"Scores: [bold]{out}[/]", highlight=False)
