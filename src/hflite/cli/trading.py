"""``hflite run`` and what reads its journal: ``status``, ``positions``, ``orders``, ``reconcile``."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from hflite.cli_errors import fail
from hflite.tables import Col, print_table

JournalOpt = Annotated[
    Path | None,
    typer.Option(
        "--journal",
        "-j",
        help="The run's SQLite journal (default: var/journal/<run name>.sqlite of --config, else the "
        "only live runtime, else the newest journal).",
    ),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")]
RunOpt = Annotated[str | None, typer.Option("--run", "-r", help="The run id (a run's id is its name).")]
WideOpt = Annotated[bool, typer.Option("--wide", help="Every column at full width.")]


def _out() -> Console:
    return Console()


def run(
    config: ConfigOpt = None,
    feed: Annotated[
        str | None,
        typer.Option(
            help="live (poll each symbol's provider right after each bar closes) or recorded (the "
            "store's bars at --speed: a demo with no keys and no network). Default: the config's "
            "\\[runtime] feed."
        ),
    ] = None,
    speed: Annotated[
        str | None,
        typer.Option(help="Recorded feed: 'max' or a time multiplier, e.g. 86400 = a day per second."),
    ] = None,
    once: Annotated[
        bool,
        typer.Option(
            "--once", help="One cycle (fetch due bars, decide, send, reconcile) and exit: for cron."
        ),
    ] = False,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Trade a broker's LIVE (real-money) endpoint. The config must say so too ([venue] live = "
            "true), and a terminal asks you to type a confirmation.",
        ),
    ] = False,
    journal: Annotated[
        Path | None,
        typer.Option(
            help="SQLite journal (default var/journal/<run name>.sqlite). An existing one resumes after its "
            "last decided bar-time; one runtime per journal."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report folder when the feed ends (default reports/<run>).")
    ] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: section.key=value (repeatable).")
    ] = None,
    api: Annotated[
        bool,
        typer.Option(
            "--api",
            help="Serve the control API (kill, pause, close-all, resume, status, /metrics) while it runs; "
            "the bearer token comes from .env (\\[api] token_env, default HFLITE_API_TOKEN).",
        ),
    ] = False,
    api_host: Annotated[
        str | None, typer.Option(help="The API's address (default \\[api] host, 127.0.0.1).")
    ] = None,
    api_port: Annotated[int | None, typer.Option(help="The API's port (default \\[api] port, 8765).")] = None,
    insecure_remote: Annotated[
        bool,
        typer.Option(
            "--insecure-remote", help="Allow a non-loopback --api-host without TLS (prints a warning)."
        ),
    ] = False,
) -> None:
    r"""Paper- or live-trade a config on a live clock: same strategy, risk, OMS and journal as a backtest.

    The venue comes from the config's \[venue] (paper = the sim venue's fill rules on live bars; alpaca, ccxt, oanda, ib = a broker, its paper endpoint unless live = true; fakebroker = the local fake broker). Safe to kill and restart: it resumes after its journal's last decided bar-time and reconciles with the venue before trading. `hflite status|positions|orders|reconcile` and `hflite risk pause|resume|close-all|kill` act on it while it runs.
    With --api it serves the control API; alerts (\[alerts]), the Telegram bot (\[telegram]) and metrics (\[metrics]) start with it as configured (docs/operating.md).
    Example: hflite run --config configs/paper.toml --feed recorded --speed 86400 --api
    """  # noqa: E501  (one line per paragraph: the help wraps it to the terminal)
    from hflite.cli import _finish, _guard, _load, _progress
    from hflite.config import ConfigError
    from hflite.engine.live import ReconcileHalt, RecoveryError, trade
    from hflite.execution.live_guard import LiveTradingRefused, check_live
    from hflite.execution.oms import JournalError
    from hflite.execution.venues.base import VenueError

    settings = _load(config, sets)
    feed_kind = feed or settings.runtime.feed
    if feed_kind not in ("live", "recorded"):
        fail(f"--feed: expected live or recorded, got {feed_kind!r}")
    if feed_kind == "recorded" and settings.venue.live:
        fail(
            f"--feed recorded: the recorded feed replays history: it cannot trade venue "
            f"{settings.venue.kind}'s live endpoint (use --feed live, or set [venue] live = false)"
        )
    factor = _speed(speed, settings.runtime.speed)
    try:
        check_live(settings, live, confirm=(lambda prompt: input(prompt)), is_tty=sys.stdin.isatty())
    except LiveTradingRefused as exc:
        fail(str(exc))
    from hflite import logs

    rt = settings.runtime
    logs.enable_file(rt.log_dir, settings.run.name, max_mb=rt.log_max_mb, backups=rt.log_backups)
    line = _StatusLine()
    name = str(config) if config is not None else ""
    kit = _ops_kit(settings, journal, api, api_host, api_port, insecure_remote)
    try:
        with _progress() as say:
            outcome = _guard(
                lambda: asyncio.run(
                    trade(
                        settings,
                        feed=feed_kind,
                        speed=factor,
                        once=once,
                        journal_path=journal,
                        progress=say,
                        status=line,
                        config=name,
                        alert=_alert,
                        ops=kit,
                    )
                )
            )
    except (JournalError, RecoveryError, VenueError, ConfigError) as exc:
        fail(str(exc))
    except ReconcileHalt as exc:
        fail(
            f"trading halted: {exc}; see `hflite reconcile` and accept with `hflite reconcile --accept`",
            code=3,
        )
    except KeyboardInterrupt:
        fail(
            "stopped by Ctrl-C: the journal keeps every decided bar; run the same command to resume", code=130
        )
    finally:
        kit.stop()
    line.done()
    for note in outcome.notes:
        _out().print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if outcome.resumed_from is not None:
        _out().print(f"resumed after {_iso(outcome.resumed_from)} ({outcome.journal})", highlight=False)
    if outcome.result is not None:
        _finish(outcome.result, settings, out)
    else:
        _out().print(f"journal: {outcome.journal}", highlight=False)


def _ops_kit(
    settings: Any, journal: Path | None, api: bool, host: str | None, port: int | None, insecure: bool
) -> Any:
    """The run's ops kit (API, alerts, Telegram, metrics), started; one line for a bad setup."""
    from hflite.engine.live import default_journal
    from hflite.ops.alerts import AlertConfigError
    from hflite.ops.api import ApiError
    from hflite.ops.watch import OpsKit

    path = journal if journal is not None else default_journal(settings)
    try:
        kit = OpsKit(settings, path, api=api, host=host, port=port, insecure_remote=insecure)
        lines = kit.start()
    except (ApiError, AlertConfigError, OSError) as exc:
        fail(str(exc))
    for text in lines:
        colour = "yellow" if text.startswith("WARNING") else "green"
        Console(stderr=True).print(f"[{colour}]{escape(text)}[/]", highlight=False, soft_wrap=True)
    return kit


def _alert(what: str, why: str) -> None:
    """The run's alert hook on a terminal: a bell and one red line on stderr (the log has it too)."""
    err = Console(stderr=True)
    err.print(f"\a[bold red]ALERT[/] {escape(what)}: {escape(why)}", highlight=False, soft_wrap=True)


def _speed(text: str | None, default: float | None) -> float | None:
    if text is None:
        return default
    if text == "max":
        return None
    try:
        factor = float(text)
    except ValueError:
        factor = math.nan
    if not (math.isfinite(factor) and factor > 0):
        fail(f"--speed: expected 'max' or a positive number such as 86400, got {text!r}")
    return factor


class _StatusLine:
    """The live progress line: last bar per symbol, equity, positions, orders, risk state."""

    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self.tty = self.console.is_terminal
        self.last = ""

    def __call__(self, book: dict[str, Any]) -> None:
        bars = " ".join(f"{s}@{(t or '')[:16]}" for s, t in book.get("last_bar", {}).items())
        text = (
            f"{(book.get('bar_ts') or '')[:16]}  equity {book['equity']:,.2f}"
            f"  positions {len(book['positions'])}"
            f"  open orders {book['open_orders']}  risk {book['risk']}"
            + (f"  HALTED {book['halted']}" if book.get("halted") else "")
            + f"  | {bars}"
        )
        self.last = text
        if self.tty:
            self.console.print(
                text[: max(self.console.width - 1, 20)], end="\r", highlight=False, soft_wrap=True
            )

    def done(self) -> None:
        if self.tty and self.last:
            self.console.print()


def _iso(ns: int | None) -> str:
    import pandas as pd

    return "-" if ns is None else pd.Timestamp(int(ns), unit="ns", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")


def _target(journal: Path | None, run: str | None, config: Path | None) -> Any:
    from hflite.cli.risk import find_target

    if journal is None and run is None and config is not None:
        from hflite.config import ConfigError, load_settings
        from hflite.engine.live import default_journal

        try:
            settings = load_settings(config)
        except ConfigError as exc:
            fail(str(exc))
        path = default_journal(settings)
        if path.exists():
            journal = path
    return find_target(journal, run, config)


def _read(path: Path) -> dict[str, Any]:
    from hflite.cli.risk import _open

    j = _open(path)
    try:
        book = j.meta("book")
        return {
            "beat": j.runtime(),
            "progress": j.progress(),
            "book": json.loads(book) if book else None,
            "orders": j.orders(),
            "fills": j.fills(),
            "reconcile": j.reconciliation(),
            "state": j.risk_state(),
            "commands": j.commands()[-5:],
            "alerts": j.events_of("alert", 3),
        }
    finally:
        j.close()


def _accepts(path: Path) -> dict[str, str]:
    from hflite.cli.risk import _open

    j = _open(path)
    try:
        return j.accepted()
    finally:
        j.close()


def status(journal: JournalOpt = None, run: RunOpt = None, config: ConfigOpt = None) -> None:
    """Is the runtime live, halted or stopped; last decided bar-time, equity, positions, orders, risk.

    Read from the run's journal (works on a stopped run too).
    Example: hflite status --config configs/paper.toml
    """
    from rich.table import Table

    from hflite.cli.risk import _runtime_text
    from hflite.execution.oms import left_by_a_crash

    target = _target(journal, run, config)
    data = _read(target.path)
    beat, book = data["beat"], data["book"] or {}
    crashed = target.owner is None and left_by_a_crash(target.path)
    table = Table(title="run status", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")
    table.add_row("journal", escape(str(target.path)))
    table.add_row("runtime", _runtime_text(beat, target.owner, crashed))
    if beat is not None and str(beat.status).startswith("halted"):
        table.add_row("trading", f"[red]{escape(beat.status)}[/] (see hflite reconcile)")
    unexplained = [d for d in data["reconcile"] if not d["explained"]]
    if unexplained:
        table.add_row("reconcile", f"[red]{len(unexplained)} unexplained difference(s)[/]: hflite reconcile")
    progress = data["progress"]
    table.add_row("last decided", _iso(progress[1]) if progress else "-")
    table.add_row("bar-times", str(progress[2]) if progress else "0")
    if book:
        table.add_row("venue", escape(str(book.get("venue", "paper"))))
        table.add_row("equity", f"{book['equity']:,.2f}")
        table.add_row("cash", ", ".join(f"{c} {v:,.2f}" for c, v in book["cash"].items()))
        table.add_row("positions", str(len(book["positions"])))
        table.add_row("open orders", str(book["open_orders"]))
        mode = book["risk"] + (f": {book['risk_reason']}" if book.get("risk_reason") else "")
        table.add_row("risk", escape(mode))
        for line in book.get("held", []):
            table.add_row("held", escape(line))
        for sym, line in book.get("feed", {}).items():
            colour = "yellow" if "delayed" in line or "waiting" in line else "white"
            table.add_row("feed", f"[{colour}]{escape(line if line.startswith(sym) else f'{sym} {line}')}[/]")
        for note in book.get("notes", []):
            table.add_row("note", f"[yellow]{escape(note)}[/]")
    for c in data["commands"]:  # the last five, with where each came from (cli, api, telegram)
        when = f"applied at {_iso(c.applied_at)}" if c.applied_at is not None else "[yellow]pending[/]"
        reason = f": {escape(c.reason)}" if c.reason else ""
        table.add_row("command", f"{c.action.replace('_', '-')} from {escape(c.source)}{reason}, {when}")
    for a in data["alerts"]:
        table.add_row("alert", f"{escape(str(a.get('level')))} {escape(str(a.get('title')))}")
    _out().print(table)


def positions(
    journal: JournalOpt = None, run: RunOpt = None, config: ConfigOpt = None, wide: WideOpt = False
) -> None:
    """The run's open positions at its last decided bar-time: quantity, average price, last close, value.

    Example: hflite positions --config configs/paper.toml
    """
    target = _target(journal, run, config)
    data = _read(target.path)
    book = data["book"]
    if not book:
        _out().print("no bar-time decided yet: no positions", highlight=False)
        return
    rows = [
        {
            "symbol": s,
            "qty": p["qty"],
            "avg_price": p["avg_price"],
            "last": p["last"],
            "value": p["qty"] * p["last"],
        }
        for s, p in sorted(book["positions"].items())
    ]
    cols = [Col("symbol", "id"), Col("qty", "number", digits=6), Col("avg_price", "number", digits=4),
            Col("last", "number", digits=4), Col("value", "number", digits=2)]  # fmt: skip
    if not rows:
        _out().print(f"flat at {book.get('bar_ts', '-')}; cash {book['cash']}", highlight=False)
        return
    print_table(_out(), cols, rows, wide=wide, title=f"positions at {book.get('bar_ts', '-')}")


def orders(
    journal: JournalOpt = None,
    run: RunOpt = None,
    config: ConfigOpt = None,
    open_only: Annotated[
        bool, typer.Option("--open", help="Only orders still working (or unknown).")
    ] = False,
    last: Annotated[int, typer.Option(help="How many of the newest orders to show (0 = all).")] = 30,
    wide: WideOpt = False,
) -> None:
    """The run's orders from its journal: id, symbol, side, type, quantity, filled, average price, status.

    Example: hflite orders --config configs/paper.toml --open
    """
    target = _target(journal, run, config)
    data = _read(target.path)
    rows = []
    for oid, o in data["orders"].items():
        status = str(o.get("status", ""))
        if open_only and status not in ("submitted", "accepted", "partially_filled", "unknown", "new"):
            continue
        rows.append({
            "id": oid, "symbol": o.get("symbol"), "side": o.get("side"), "type": o.get("type"),
            "qty": o.get("qty"), "filled": o.get("filled_qty"), "avg_price": o.get("avg_fill_price") or None,
            "status": status, "created": _iso(o.get("created_ts")), "reason": o.get("reason", ""),
        })  # fmt: skip
    rows.sort(key=lambda r: r["created"])
    if last:
        rows = rows[-last:]
    if not rows:
        _out().print("no orders" + (" working" if open_only else ""), highlight=False)
        return
    cols = [Col("id", "id"), Col("symbol", "id"), Col("side", "id"), Col("type", "id", default=False),
            Col("qty", "number", digits=6), Col("filled", "number", digits=6),
            Col("avg_price", "number", digits=4), Col("status", "id"), Col("created", "text", default=False),
            Col("reason", "text", default=False)]  # fmt: skip
    print_table(_out(), cols, rows, wide=wide, title="orders")


def reconcile(
    journal: JournalOpt = None,
    run: RunOpt = None,
    config: ConfigOpt = None,
    accept: Annotated[
        bool, typer.Option("--accept", help="Accept the stated resolution of every unexplained difference.")
    ] = False,
    key: Annotated[
        list[str] | None, typer.Option("--key", help="With --accept: only this difference (repeatable).")
    ] = None,
    wide: WideOpt = False,
) -> None:
    """The latest reconciliation of the run's journal with its venue: each difference and how it was resolved.

    An unexplained difference halts trading until you accept its stated resolution with --accept (the running runtime applies it at its next check, within seconds).
    Example: hflite reconcile --config configs/paper.toml --accept
    """  # noqa: E501  (one line per paragraph: the help wraps it to the terminal)
    from hflite.cli.risk import _open

    target = _target(journal, run, config)
    data = _read(target.path)
    diffs = data["reconcile"]
    waiting = _accepts(target.path)  # accepted, not applied by a runtime yet
    for d in diffs:
        if not d["explained"] and d["key"] in waiting:
            d["explained"], d["pending"] = True, True
    if accept:
        todo = [d for d in diffs if not d["explained"] and (not key or d["key"] in key)]
        missing = sorted(set(key or []) - {d["key"] for d in diffs})
        if missing:
            fail(f"no difference {', '.join(missing)} in the latest reconciliation of {target.path}")
        if not todo:
            _out().print("nothing to accept: no unexplained difference", highlight=False)
            return
        j = _open(target.path)
        try:
            for d in todo:
                j.accept(d["key"], d["resolution"])
        finally:
            j.close()
        for d in todo:
            _out().print(f"accepted {d['key']}: {escape(d['resolution'])}", highlight=False)
        return
    if not diffs:
        _out().print(
            "no differences: the journal and the venue agree (or no reconciliation ran yet)", highlight=False
        )
        return
    rows = [
        {"key": d["key"],
         "explained": "accepted (applies at the next check)" if d.get("pending") else
         ("yes" if d["explained"] else "NO"), "journal": d["journal"],
         "venue": d["venue"], "resolution": d["resolution"], "kind": d["kind"]}
        for d in diffs
    ]  # fmt: skip
    cols = [Col("key", "id"), Col("explained", "id"), Col("journal", "text"), Col("venue", "text"),
            Col("resolution", "text"), Col("kind", "id", default=False)]  # fmt: skip
    print_table(_out(), cols, rows, wide=wide, title="reconciliation")
    if any(not d["explained"] for d in diffs):
        _out().print("trading is halted until these are accepted: hflite reconcile --accept", highlight=False)
