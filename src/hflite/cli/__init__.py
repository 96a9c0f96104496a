"""The ``hflite`` command line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from hflite.cli.risk import risk_app
from hflite.cli_ai import ProgressBar, features_app, models_app
from hflite.cli_ai import sentiment as sentiment_command
from hflite.cli_ai import train as train_command
from hflite.cli_errors import fail
from hflite.cli_llm import llm_app
from hflite.config import ConfigError, Settings, load_settings, parse_overrides

app = typer.Typer(
    help="HedgeFund-Lite: a personal, explainable, risk-first trading system.\n\n"
    "Example: hflite backtest --config configs/demo.toml",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
data_app = typer.Typer(
    help="The local data store: update from providers, validate, archive, inspect.\n\n"
    "Example: hflite data update",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
app.add_typer(risk_app, name="risk")


class _Consoles:
    """A rich Console made when used, so its width follows the environment of each call (COLUMNS,
    a terminal or a pipe) rather than whatever was true when this module was imported."""

    def __init__(self, stderr: bool) -> None:
        self.stderr = stderr

    def __getattr__(self, name: str) -> Any:
        return getattr(Console(stderr=self.stderr), name)


console: Any = _Consoles(stderr=False)
err: Any = _Consoles(stderr=True)


@app.callback()
def _main(
    log_level: Annotated[
        str, typer.Option(help="DEBUG, INFO, WARNING or ERROR (logs go to stderr).")
    ] = "WARNING",
    log_json: Annotated[bool, typer.Option(help="Log one JSON object per line.")] = False,
) -> None:
    """HedgeFund-Lite: a personal, explainable, risk-first trading system.

    Example: hflite --log-level INFO backtest --config configs/demo.toml
    """
    from dotenv import load_dotenv

    from hflite import logs

    load_dotenv(".env", override=False)  # provider keys (FRED_API_KEY, ...) may live in .env
    try:
        logs.configure(log_level, log_json)
    except ValueError as exc:
        _fail(str(exc))


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a setting: section.key=value (repeatable), e.g. --set strategy.fast=20."
    ),
]

LLMOpt = Annotated[
    str | None,
    typer.Option(
        "--llm",
        help="off, replay (recorded replies only; never calls a model) or live (call the configured "
        "model and record every reply). Default: the config's \\[llm] mode (replay).",
    ),
]


def _settings(config: Path | None, sets: list[str] | None, shortcuts: dict[str, Any]) -> Settings:
    overrides: dict[str, Any] = {}
    for dotted, value in shortcuts.items():
        if value is not None:
            section, key = dotted.split(".")
            overrides.setdefault(section, {})[key] = value
    extra = parse_overrides(sets or [])
    for section, values in extra.items():
        if isinstance(values, dict):
            overrides.setdefault(section, {}).update(values)
    return load_settings(config, overrides)


_fail = fail  # one error line, plain text (hflite.cli_errors)


@app.command()
def backtest(
    config: ConfigOpt = None,
    strategy: Annotated[
        str | None, typer.Option(help="trend, breakout, mean_reversion, tsmom, xsmom or ai_ensemble.")
    ] = None,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated symbols, e.g. SPY,TLT,BTC-USD.")
    ] = None,
    start: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD.")] = None,
    end: Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD.")] = None,
    cash: Annotated[float | None, typer.Option(help="Initial cash in USD.")] = None,
    sets: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="Report folder (default reports/<run-id>).")] = None,
    rerun: Annotated[
        Path | None,
        typer.Option(help="A report folder: run its config again on the exact data versions it read."),
    ] = None,
    llm: LLMOpt = None,
) -> None:
    """Run a backtest on the local store and write an HTML report.

    Example: hflite backtest --strategy trend --symbols SPY,TLT,GLD,BTC-USD,EURUSD
    --start 2015-01-01 --end 2024-12-06 --set strategy.fast=20 --out reports/my-run

    With an LLM: hflite backtest --config configs/ai.toml --llm replay (recorded replies only)
    or --llm live (calls the model in \\[llm] and records every reply).
    """
    from hflite.engine.run import backtest as run_backtest

    if rerun is not None:
        settings = _rerun_settings(rerun, [*(sets or []), *([f"llm.mode={llm}"] if llm else [])])
    else:
        settings = _load(
            config, sets, strategy=strategy, symbols=symbols, start=start, end=end, cash=cash, llm=llm
        )
    with _progress() as say:
        result = _guard(lambda: run_backtest(settings, progress=say))
    _finish(result, settings, out)


@app.command()
def replay(
    config: ConfigOpt = None,
    speed: Annotated[
        str, typer.Option(help="'max' (no waiting) or a time multiplier, e.g. 86400 = a day per second.")
    ] = "max",
    sets: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="Report folder (default reports/<run-id>).")] = None,
    journal: Annotated[
        Path | None,
        typer.Option(
            help="SQLite journal (default var/journal/<run-id>.sqlite). An existing one resumes: its "
            "pause, kill or halt stays in force and queued commands apply at the first bar-time. One "
            "runtime per journal: a second one on it refuses to start, naming the pid that holds it."
        ),
    ] = None,
    llm: LLMOpt = None,
) -> None:
    """Run the live runtime (asyncio, bar by bar, SQLite journal) on recorded bars.

    Same strategy, risk gate, OMS and venue as a backtest; results match it exactly.
    `hflite risk pause|resume|close-all|kill|status` act on it while it runs.
    Example: hflite replay --config configs/demo.toml --speed max
    """
    import math

    from hflite.engine.replay import replay as run_replay
    from hflite.execution.oms import JournalError

    try:
        factor = None if speed == "max" else float(speed)
    except ValueError:
        factor = math.nan
    if factor is not None and math.isinf(factor) and factor > 0:
        _fail(f"--speed: {speed!r} is infinite: use 'max' for no waiting")
    if factor is not None and not (math.isfinite(factor) and factor > 0):
        _fail(f"--speed: expected 'max' or a positive number such as 86400, got {speed!r}")
    settings = _load(config, sets, llm=llm)
    name = str(config) if config is not None else ""
    try:
        with _progress() as say:
            result = _guard(
                lambda: asyncio.run(
                    run_replay(settings, speed=factor, journal_path=journal, progress=say, config=name)
                )
            )
    except JournalError as exc:  # not a journal, or another runtime owns it
        _fail(str(exc))
    _finish(result, settings, out)


@app.command()
def explain(
    decision: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="An intent id (e.g. trend-SPY-d12, in verdicts.csv) or an order id (orders.csv; "
            "protective -sl/-tp orders lead to the entry that placed them).",
        ),
    ],
    report: Annotated[
        Path | None,
        typer.Option(
            help="Report folder (default: the newest report under report.dir, reports/, that holds the id)."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML config file (for its report.dir).")
    ] = None,
) -> None:
    """Explain one decision from a report: the intent and the indicators it saw, for the AI ensemble
    its views (banker, investor, market) with their top reasons, the model id, P(up) and regime, the
    LLM's explanation (or the rule-based one, and why) and the portfolio manager's advice with the
    model, backend, prompt hash, as-of time and tokens, the risk verdict (requested -> approved,
    reason, rules), every risk check with its value and limit, the orders, fills and trade it led
    to, and the data versions of the run. Without --report, the reports under report.dir are searched
    newest first, and the output says which one holds the id (and how many do).

    Example: hflite explain trend-SPY-d12 --report reports/demo-trend-20250101-120000
    """
    from rich.text import Text

    from hflite.explain import TrailError, find_trail, load_trail, render_trail, report_dir

    note = ""
    try:
        if report is not None:
            trail = load_trail(report, decision)
        else:  # ids repeat across runs: the newest report that holds it, and say which
            found = find_trail(report_dir(config), decision)
            trail, note = found.trail, found.note
    except TrailError as exc:
        _fail(str(exc), code=1)
        return
    if note:
        console.print(Text(note, style="dim"))
    console.print(render_trail(trail))


def _data_config(config: Path | None, data_dir: Path | None = None) -> Any:
    from hflite.config import load_data_settings

    try:
        data = load_data_settings(config)
    except ConfigError as exc:
        _fail(str(exc))
        raise
    return data.model_copy(update={"dir": data_dir}) if data_dir is not None else data


def _store(config: Path | None, data_dir: Path | None = None, create: bool = False) -> Any:
    """The store of data.dir (created with the sample on first use), or of --data-dir: a folder that
    holds no store there is refused unless ``create``, so a typo never makes a new store."""
    from hflite.data.sample import ensure_sample
    from hflite.data.store import MANIFEST_NAME, Store, StoreError

    data = _data_config(config, data_dir)
    if data_dir is not None and not create and not (Path(data.dir).expanduser() / MANIFEST_NAME).is_file():
        hint = "check the path, or pass --create to make one"
        _fail(f"--data-dir {data_dir}: no data store there; {hint}")
    try:
        store = Store(data.dir, archive_root=data.archive_dir)
        ensure_sample(store)
    except StoreError as exc:
        _fail(str(exc))
        raise
    return store


DataDirOpt = Annotated[Path | None, typer.Option(help="Store folder (default from config: var/data).")]
CreateOpt = Annotated[
    bool, typer.Option("--create", help="Make a new store in --data-dir if it holds none (else an error).")
]
WideOpt = Annotated[bool, typer.Option("--wide", help="Every column (for a wide terminal).")]


@data_app.command("list")
def data_list(data_dir: DataDirOpt = None, config: ConfigOpt = None, create: CreateOpt = False) -> None:
    """Show what the local store holds: symbol, frequency, first, last, rows, data version.

    Imports the embedded sample data set on first use. Example: hflite data list
    """
    from hflite.data.store import render_partitions_table

    console.print(render_partitions_table(_store(config, data_dir, create)))


@data_app.command("update")
def data_update(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    only: Annotated[str | None, typer.Option(help="bars, series or news.")] = None,
    wide: WideOpt = False,
    create: CreateOpt = False,
) -> None:
    """Bring every configured symbol, series and news query up to date, incrementally.

    Fetches only what is newer than the store (plus a small overlap checked for revisions),
    validates it (bad rows go to quarantine), backfills calendar gaps the vendor has and records the
    rest. Running it twice in a row changes nothing. Without network it keeps the stored data and
    says so. Example (cron): hflite data update --config configs/demo.toml
    """
    from hflite.data.update import Updater

    data = _data_config(config, data_dir)
    from hflite.data.update import update_items

    if only not in (None, "bars", "series", "news"):
        _fail(f"--only: expected bars, series or news, got {only!r}")
    items = update_items(data.update, only)
    store = _store(config, data_dir, create)
    updater = Updater(
        store, history_start=_utc_day(data.update.history_start), overlap_bars=data.update.overlap_bars
    )
    _run_update(updater, items, wide)


def _run_update(updater: Any, items: list[Any], wide: bool = False, title: str = "data update") -> None:
    from rich.progress import Progress

    from hflite.data.store import StoreError
    from hflite.tables import Col, print_table

    live = Console(stderr=True)  # one console for the whole live display
    try:
        with Progress(console=live, transient=True, disable=not live.is_terminal) as bar:
            task = bar.add_task("updating", total=len(items))
            results = updater.run(
                items, progress=lambda item, n: bar.update(task, completed=n, description=item.label)
            )
    except StoreError as exc:  # a damaged partition: never merge new data into it
        _fail(str(exc))
        raise
    cols = [Col("item", "id"), Col("status", "id"), Col("rows", "count")]
    cols += [Col(name.replace("_", " "), "count", default=False) for name in _COUNTS]
    print_table(console, [*cols, Col("message")], _update_rows(results, wide), wide=wide, title=title)
    failed = [r for r in results if r.status == "failed"]
    skipped = [r for r in results if r.status == "skipped"]
    if skipped:
        console.print(
            f"[yellow]{len(skipped)} item(s) skipped[/] (offline or no key): the store keeps its "
            "data, which on a fresh machine is the embedded sample."
        )
    if failed:
        err.print(f"[red]{len(failed)} item(s) failed[/]: see the message column.")
        raise typer.Exit(1)


_COUNTS = ("quarantined", "revisions", "gaps_filled", "gaps_recorded")


def _update_rows(results: list[Any], wide: bool) -> list[dict[str, Any]]:
    """The rows of the update table; without ``wide`` the counts other than rows, when not zero, lead
    the message (their columns show only with --wide)."""
    from rich.text import Text

    colours = {"updated": "green", "unchanged": "dim", "skipped": "yellow", "failed": "red"}
    rows = []
    for r in results:
        counts = {name.replace("_", " "): int(getattr(r, name)) for name in _COUNTS}
        message = r.message
        if not wide and any(counts.values()):
            noted = ", ".join(f"{name} {n}" for name, n in counts.items() if n)
            message = f"{noted}; {message}" if message else noted
        status = Text(r.status, style=colours[r.status])
        rows.append({"item": r.item.label, "status": status, "rows": r.rows, **counts, "message": message})
    return rows


def _utc_day(d: Any) -> Any:
    import pandas as pd

    return pd.Timestamp(d, tz="UTC")


@data_app.command("fetch")
def data_fetch(
    provider: Annotated[
        str, typer.Option(help="yfinance, alphavantage, polygon, coingecko, ccxt, oanda, fred.")
    ],
    symbols: Annotated[str | None, typer.Option(help="Comma-separated symbols (ccxt: BTC/USDT).")] = None,
    series: Annotated[str | None, typer.Option(help="Comma-separated FRED series ids.")] = None,
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")] = "2000-01-01",
    timeframe: Annotated[str, typer.Option(help="1d, 1h or 1m.")] = "1d",
    exchange: Annotated[str | None, typer.Option(help="ccxt exchange id, e.g. binance.")] = None,
    vintage: Annotated[
        bool, typer.Option(help="FRED: first-release (point-in-time) values from ALFRED.")
    ] = False,
    asset_class: Annotated[
        str | None, typer.Option(help="For symbols not in the sample: equity, etf, crypto or fx.")
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    wide: WideOpt = False,
    create: CreateOpt = False,
) -> None:
    """Fetch bars or macro series from one provider into the store (validated, incremental).

    Examples: hflite data fetch --provider yfinance --symbols SPY,AAPL --start 2010-01-01
    hflite data fetch --provider ccxt --exchange binance --symbols BTC/USDT --timeframe 1h
    hflite data fetch --provider fred --series DGS10,CPIAUCSL --vintage
    """
    from hflite.data.update import UpdateItem, Updater

    if not symbols and not series:
        _fail("give --symbols or --series")
    opts = (("exchange", exchange),) if exchange else ()
    items = [
        UpdateItem(
            "bars",
            provider,
            s.replace("/", ""),
            timeframe,
            asset_class,
            opts,
        )
        for s in (symbols or "").split(",")
        if s
    ]
    items += [
        UpdateItem("vintage" if vintage else "series", provider, s) for s in (series or "").split(",") if s
    ]
    updater = Updater(_store(config, data_dir, create), history_start=_utc_day(start))
    _run_update(updater, items, wide, "data fetch")


@data_app.command("news")
def data_news(
    provider: Annotated[str, typer.Option(help="finnhub or newsapi.")],
    symbols: Annotated[str, typer.Option(help="Comma-separated tickers.")],
    since: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    wide: WideOpt = False,
    create: CreateOpt = False,
) -> None:
    """Fetch headlines for tickers into the news table (deduplicated).

    Example: hflite data news --provider finnhub --symbols AAPL --since 2024-01-01
    """
    from hflite.data.update import UpdateItem, Updater

    item = UpdateItem("news", provider, symbols, since=since)
    _run_update(Updater(_store(config, data_dir, create)), [item], wide, "data news")


@data_app.command("check")
def data_check(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    html: Annotated[Path, typer.Option(help="Where to write the HTML report.")] = Path(
        "reports/data-check.html"
    ),
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Restore damaged partitions: from a kept version, else fetched again (the embedded "
            "sample, or the provider).",
        ),
    ] = False,
    wide: WideOpt = False,
    create: CreateOpt = False,
) -> None:
    """Quality report of the whole store, per symbol and rule (terminal table and HTML).

    First checks every file against the data version the manifest records: a damaged partition (a
    file edited in place, overwritten or unreadable) stops the check until --repair restores it.
    Example: hflite data check (then, if it says so: hflite data check --repair)
    """
    import pandas as pd

    from hflite.data.quality import check_store, render_quality_table, write_quality_html
    from hflite.data.store import StoreError

    store = _store(config, data_dir, create)
    if repair:
        _repair(store, _data_config(config, data_dir))
    else:
        _refuse_damage(store)
    try:
        report = check_store(store, now=pd.Timestamp.now(tz="UTC"))
    except StoreError as exc:
        _fail(str(exc))
        raise
    console.print(render_quality_table(report, wide=wide))
    html.parent.mkdir(parents=True, exist_ok=True)
    write_quality_html(report, html)
    console.print(f"Report: [bold]{html}[/]", highlight=False)


def _short_paths(store: Any, text: str) -> str:
    """``text`` with partition files named without their folders (archive files as ``archive:...``): the
    partition column says whose they are."""
    import re

    archive = store.archive_root
    text = text.replace(f"{archive}/", "archive:") if archive is not None else text
    return re.sub(r"[^\s:]*/(data[.\w]*\.parquet)", r"\1", text.replace(f"{store.root}/", ""))


def _refuse_damage(store: Any) -> None:
    """Stop with a table of the damaged partitions (exit 1) when any file differs from the manifest."""
    from hflite.tables import Col, print_table

    problems = store.verify()
    if not problems:
        return
    rows = [{"partition": key, "problem": _short_paths(store, p)} for key, p in sorted(problems.items())]
    print_table(console, [Col("partition", "id"), Col("problem")], rows, title="damaged partitions")
    _fail(f"{len(problems)} damaged partition(s): run `hflite data check --repair`", code=1)


def _repair(store: Any, data: Any) -> None:
    """Repair the store and print what was done; exit 1 when something could not be repaired."""
    from rich.text import Text

    from hflite.data.store import StoreError
    from hflite.data.update import refetcher
    from hflite.tables import Col, print_table

    try:
        done = store.repair(refetch=refetcher(data.update))
    except StoreError as exc:
        _fail(str(exc))
        return
    if not done:
        console.print("every file matches its data version: nothing to repair")
        return
    rows = [
        {
            "partition": r.key,
            "problem": _short_paths(store, r.problem),
            "action": Text(r.action, style="green" if r.repaired else "red"),
        }
        for r in done
    ]
    print_table(console, [Col("partition", "id"), Col("problem"), Col("action")], rows, title="data repair")
    failed = [r for r in done if not r.repaired]
    if failed:
        _fail(f"{len(failed)} partition(s) could not be repaired: see the action column", code=1)


@data_app.command("archive")
def data_archive(
    older_than: Annotated[str, typer.Option(help="Age threshold, e.g. 3y, 18m, 400d.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    create: CreateOpt = False,
) -> None:
    """Move bars older than a threshold to the archive path (data.archive_dir); still readable.

    Example: hflite data archive --older-than 3y
    """
    from hflite.data.store import archive_cutoff

    try:
        archive_cutoff(older_than)
    except ValueError:
        _fail(f"--older-than: expected a number with a unit y, m or d, e.g. 3y, got {older_than!r}")
    store = _store(config, data_dir, create)
    if store.archive_root is None:
        _fail("no archive path: set data.archive_dir in the config (or HFLITE_DATA__ARCHIVE_DIR)")
    try:
        moved = store.archive(older_than)
    except ValueError as exc:  # a damaged file, an archive folder it cannot create, another archive root
        _fail(str(exc))
        return
    console.print(f"archived {len(moved)} partition(s) to {store.archive_root}")
    for item in moved:
        console.print(f"  {item}", highlight=False)


@data_app.command("versions")
def data_versions(
    symbol: Annotated[str, typer.Argument(help="Symbol, e.g. SPY (or a FRED series id).")],
    freq: Annotated[str, typer.Option(help="Bar frequency.")] = "1d",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    create: CreateOpt = False,
) -> None:
    """Content hashes of a partition over time (the data versions runs record).

    Example: hflite data versions SPY
    """
    from rich.table import Table

    from hflite.data.store import DataNotFoundError

    store = _store(config, data_dir, create)
    key = f"bars/{symbol}/{freq}" if store.has_bars(symbol, freq) else f"macro/{symbol}"
    try:
        current = store.version(key)
        history = store.history(key)
    except DataNotFoundError as exc:
        _fail(str(exc))
        return
    table = Table(title=f"versions of {key}")
    for col in ("version", "written at", "rows", "source", ""):
        table.add_column(col)
    for h in history:
        table.add_row(h["hash"][:16], str(h["written_at"]), str(h["rows"]), str(h.get("source", "")), "")
    info = next(p for p in store.partitions() if p.key == key)
    table.add_row(current[:16], str(info.written_at), str(info.rows), info.source, "current")
    console.print(table)


def _rerun_settings(folder: Path, sets: list[str] | None) -> Settings:
    """The settings a report folder recorded (its config.json, with data.pin), plus --set."""
    import json

    path = folder / "config.json"
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        _fail(f"--rerun: cannot read {path}: {exc}")
        raise
    openai = recorded.get("llm", {}).get("openai", {}) if isinstance(recorded.get("llm"), dict) else {}
    if isinstance(openai, dict) and openai.get("api_key") == "**********":
        del openai["api_key"]  # reports hold a masked key: the environment (.env) supplies the real one
    for section, values in parse_overrides(sets or []).items():
        if isinstance(values, dict):
            recorded.setdefault(section, {}).update(values)
    try:
        return load_settings(None, recorded)
    except ConfigError as exc:
        _fail(str(exc))
        raise


def _load(config: Path | None, sets: list[str] | None, **shortcuts: Any) -> Settings:
    keys = {
        "strategy": "strategy.name",
        "symbols": "run.symbols",
        "start": "run.start",
        "end": "run.end",
        "cash": "run.initial_cash",
        "llm": "llm.mode",
    }
    try:
        return _settings(config, sets, {keys[k]: v for k, v in shortcuts.items()})
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable


def _guard(fn: Any) -> Any:
    from hflite.data.store import StoreError
    from hflite.engine.core import StrategyError

    try:
        return fn()
    except ConfigError as exc:
        _fail(str(exc))
    except StoreError as exc:  # a damaged data file, a data.dir it cannot create
        _fail(str(exc))
    except StrategyError as exc:
        _fail(str(exc), code=3)
    return None


_progress = ProgressBar  # a rich progress bar fed by (message, fraction) callbacks


def _finish(result: Any, settings: Settings, out: Path | None) -> None:
    from hflite.analytics.metrics import benchmark_metrics, run_metrics
    from hflite.analytics.report import ReportError, write_report
    from hflite.analytics.summary import summary_table

    folder = out or settings.report.dir / result.run_id
    metrics = run_metrics(result)
    bench = benchmark_metrics(result)
    try:
        report = write_report(result, folder, metrics)
    except ReportError as exc:  # the folder deleted meanwhile, a full disk, no permission
        _fail(str(exc), code=1)
        return
    console.print(summary_table(result, metrics, bench))
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    console.print(f"Report: [bold]{report}[/]", highlight=False)


# Paper and live trading (hflite.cli.trading, hflite.cli.venue), after backtest and replay.
from hflite.cli import trading as _trading  # noqa: E402  (the commands need app and its helpers)
from hflite.cli.venue import venue_app  # noqa: E402

app.command("run")(_trading.run)
app.command("status")(_trading.status)
app.command("positions")(_trading.positions)
app.command("orders")(_trading.orders)
app.command("reconcile")(_trading.reconcile)
app.add_typer(venue_app, name="venue")

from hflite.cli import serve as _serve  # noqa: E402

app.command("serve")(_serve.serve)

from hflite.cli.alerts import alerts_app  # noqa: E402

app.add_typer(alerts_app, name="alerts")

from hflite.cli import ops as _ops  # noqa: E402

app.command("backup")(_ops.backup)
app.command("restore")(_ops.restore)
app.command("mlflow-ui")(_ops.mlflow_ui)

# Execution quality and drift (hflite.cli.execution): read a paper or live run's journal.
from hflite.cli import execution as _execution  # noqa: E402

app.add_typer(_execution.execution_app, name="execution")
app.command("drift")(_execution.drift)

# The validation lab (hflite.lab): optimize, walkforward, validate, portfolio. Each module registers
# its commands below this line.
# -- lab commands --
from hflite.cli import optimize as _optimize  # noqa: E402

app.command("optimize")(_optimize.optimize)
from hflite.cli import walkforward as _walkforward  # noqa: E402

app.command("walkforward")(_walkforward.walkforward)
from hflite.cli import portfolio as _portfolio  # noqa: E402

app.command("portfolio")(_portfolio.portfolio)

from hflite.cli import validate as _validate  # noqa: E402

app.command("validate")(_validate.validate)

# The AI commands (hflite.cli_ai), listed after the run and data commands.
app.add_typer(features_app, name="features")
app.command("train")(train_command)
app.add_typer(models_app, name="models")
app.command("sentiment")(sentiment_command)
app.add_typer(llm_app, name="llm")


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="hflite")


if __name__ == "__main__":  # pragma: no cover
    main()
