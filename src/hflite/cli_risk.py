"""``hflite risk``: emergency commands for a running runtime, through its SQLite journal.

The CLI never talks to the runtime directly: it queues the command in the journal's ``commands``
table; the runtime polls that table at every bar-time, applies what it finds after the mark and
before decisions, and records the bar-time it took effect at. The runtime also writes a heartbeat
row every second, which is how ``status`` (and ``--wait``) tell a live runtime from a dead one.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from hflite.execution.oms import RuntimeBeat, SqliteJournal

#: A runtime whose last heartbeat is older than this (seconds) is not live: it has stopped or died.
LIVE_WITHIN_S = 5.0

risk_app = typer.Typer(
    help="Emergency commands for a running replay or paper runtime: pause, resume, close-all, kill, "
    "status. Commands go through the runtime's journal and apply at its next bar-time; the state "
    "persists there, so a restart on the same journal keeps a halt, pause or kill in force.\n\n"
    "Example: hflite risk pause --reason 'news pending'",
    no_args_is_help=True,
)

JournalOpt = Annotated[
    Path | None,
    typer.Option(
        "--journal",
        "-j",
        help="The runtime's SQLite journal (default: the newest *.sqlite in var/journal next to the "
        "config's data dir).",
    ),
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (to find its journal folder).")
]
ReasonOpt = Annotated[str, typer.Option(help="Why: kept in the journal and in every rejection it causes.")]
WaitOpt = Annotated[
    float,
    typer.Option(help="Seconds to wait for a live runtime to apply it (0: queue and return)."),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def _out() -> Console:
    return Console()  # made per call, so its width follows the environment of each call


def _fail(message: str, code: int = 2) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def _when(ns: int | None) -> str:
    """A bar-time (ns UTC) as text."""
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _wall(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _mtime(path: Path) -> float:
    """Last write, counting the WAL file (a live journal's main file changes only at checkpoints)."""
    wal = path.with_name(path.name + "-wal")
    return max(path.stat().st_mtime, wal.stat().st_mtime if wal.exists() else 0.0)


def find_journal(journal: Path | None, config: Path | None) -> Path:
    """The journal to act on: ``--journal``, else the newest one next to the config's data dir."""
    if journal is not None:
        if not journal.is_file():
            _fail(
                f"no journal at {journal}: give the path of an existing journal, or start a runtime "
                "first (hflite replay --config configs/demo.toml --speed 86400)"
            )
        return journal
    from hflite.config import ConfigError, load_data_settings

    try:
        data = load_data_settings(config)
    except ConfigError as exc:
        _fail(str(exc))
        raise
    folder = data.dir.parent / "journal"
    found = sorted(folder.glob("*.sqlite"), key=_mtime) if folder.is_dir() else []
    if not found:
        _fail(
            f"no journal in {folder}: start a runtime first (hflite replay --config configs/demo.toml "
            "--speed 86400) or pass --journal PATH"
        )
    return found[-1]


def _open(path: Path) -> SqliteJournal:
    from hflite.execution.oms import SqliteJournal

    return SqliteJournal(path)


def is_live(beat: RuntimeBeat | None, now: float | None = None) -> bool:
    """A runtime is live when it says it is running and its heartbeat is recent."""
    if beat is None or beat.status != "running":
        return False
    return (now if now is not None else time.time()) - beat.beat <= LIVE_WITHIN_S


def _send(action: str, reason: str, journal: Path | None, config: Path | None, wait: float) -> None:
    """Queue one command; with a live runtime and ``wait`` > 0, report the bar-time it took effect."""
    if wait < 0:
        _fail(f"--wait: expected 0 or more seconds, got {wait:g}")
    path = find_journal(journal, config)
    name = action.replace("_", "-")
    out = _out()
    j = _open(path)
    try:
        live = is_live(j.runtime())
        seq = j.queue_command(action, reason, source="cli")
        out.print(f"queued {name} (command {seq}) in {path}", highlight=False, markup=False)
        if not live:
            out.print(
                "no runtime is live on this journal: it applies at the first bar-time of the next start "
                f"on it (hflite replay --journal {path})",
                highlight=False,
                markup=False,
            )
            return
        if wait == 0:
            out.print("it applies at the runtime's next bar-time (hflite risk status shows when)")
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            at = j.applied_at(seq)
            if at is not None:
                out.print(f"[green]applied[/] at bar time {_when(at)}", highlight=False)
                _print_state(out, j.risk_state())
                return
            time.sleep(0.05)
        out.print(
            f"[yellow]not applied within {wait:g} s[/]: it applies at the runtime's next bar-time "
            "(hflite risk status shows when)",
            highlight=False,
        )
    finally:
        j.close()


def _print_state(out: Console, state: dict[str, Any] | None) -> None:
    if not state:
        return
    mode = f"mode: {state.get('mode', 'running')}"
    if state.get("mode_reason"):
        mode += f" ({state['mode_reason']})"
    out.print(mode, highlight=False, markup=False)
    if state.get("halted"):
        out.print(f"halted: {state.get('halt_reason', '')}", highlight=False, markup=False)


@risk_app.command("pause")
def pause(
    reason: ReasonOpt = "",
    journal: JournalOpt = None,
    config: ConfigOpt = None,
    wait: WaitOpt = 5.0,
) -> None:
    """No new entries until resumed; exits, stops and targets keep working.

    Example: hflite risk pause --reason "FOMC at 14:00" --wait 10
    """
    _send("pause", reason, journal, config, wait)


@risk_app.command("resume")
def resume(
    reason: ReasonOpt = "",
    journal: JournalOpt = None,
    config: ConfigOpt = None,
    wait: WaitOpt = 5.0,
) -> None:
    """Lift a pause, a kill and the drawdown halt (the drawdown peak restarts from current equity).

    Example: hflite risk resume --reason "checked the fills" --journal var/journal/demo-replay.sqlite
    """
    _send("resume", reason, journal, config, wait)


@risk_app.command("close-all")
def close_all(
    reason: ReasonOpt = "",
    journal: JournalOpt = None,
    config: ConfigOpt = None,
    wait: WaitOpt = 5.0,
    yes: YesOpt = False,
) -> None:
    """Flatten every position with market orders and keep running (new entries still allowed).

    Asks for confirmation unless --yes. Example: hflite risk close-all --reason "de-risk" --yes
    """
    path = find_journal(journal, config)
    if not yes:
        typer.confirm(f"Close every position of the runtime on {path}?", abort=True)
    _send("close_all", reason, path, config, wait)


@risk_app.command("kill")
def kill(
    reason: ReasonOpt = "",
    journal: JournalOpt = None,
    config: ConfigOpt = None,
    wait: WaitOpt = 5.0,
    yes: YesOpt = False,
) -> None:
    """Cancel every order, flatten every position and stop the runtime once flat.

    A restart on the same journal stays killed (no entries) until `hflite risk resume`.
    Asks for confirmation unless --yes. Example: hflite risk kill --reason "venue outage" --yes
    """
    path = find_journal(journal, config)
    if not yes:
        typer.confirm(f"Kill the runtime on {path}: cancel every order, flatten and stop?", abort=True)
    _send("kill", reason, path, config, wait)


@risk_app.command("status")
def status(
    journal: JournalOpt = None,
    config: ConfigOpt = None,
    events: Annotated[int, typer.Option(help="How many of the last risk events to show.")] = 10,
) -> None:
    """Is a runtime live; the persisted mode and halt; commands, last risk events and verdicts.

    Everything is read from the journal: a runtime is live while it writes a heartbeat row every
    second (none for 5 s: stopped or dead).
    Example: hflite risk status --journal var/journal/demo-replay.sqlite
    """
    path = find_journal(journal, config)
    j = _open(path)
    try:
        beat, state = j.runtime(), j.risk_state()
        commands, last, counts = j.commands(), j.risk_events(events), j.verdict_counts()
    finally:
        j.close()
    out = _out()
    out.print(_runtime_table(path, beat, state))
    out.print(_commands_table(commands))
    out.print(_events_table(last))
    out.print(_verdicts_table(counts))


def _runtime_text(beat: RuntimeBeat | None) -> str:
    if beat is None:
        return "[dim]no runtime has run on this journal[/]"
    age = time.time() - beat.beat
    if is_live(beat):
        return f"[green]live[/] (pid {beat.pid}, heartbeat {age:.1f} s ago, since {_wall(beat.started)})"
    if beat.status == "running":
        return (
            f"[red]not live[/]: no heartbeat for {age:.0f} s (pid {beat.pid}); it died without "
            "stopping cleanly"
        )
    return f"[dim]stopped[/] at {_wall(beat.beat)} (pid {beat.pid})"


def _runtime_table(path: Path, beat: RuntimeBeat | None, state: dict[str, Any] | None) -> Any:
    from rich.table import Table

    st = state or {}
    mode = str(st.get("mode", "running"))
    colour = {"running": "green", "paused": "yellow", "killed": "red"}.get(mode, "white")
    table = Table(title="risk status", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")
    table.add_row("journal", escape(str(path)))
    table.add_row("runtime", _runtime_text(beat))
    table.add_row("last bar-time", _when(beat.bar_ts if beat else None))
    why = f": {escape(str(st['mode_reason']))}" if st.get("mode_reason") else ""
    table.add_row("mode", f"[{colour}]{escape(mode)}[/]{why}")
    halt = f"[red]halted[/]: {escape(str(st.get('halt_reason', '')))}" if st.get("halted") else "[green]no[/]"
    table.add_row("drawdown halt", halt)
    return table


def _commands_table(commands: list[Any], last: int = 20) -> Any:
    from rich.table import Table

    shown = commands[-last:]
    title = "commands" + (f" (last {last} of {len(commands)})" if len(commands) > last else "")
    table = Table(title=title)
    for col in ("#", "queued", "action", "reason", "source", "applied at (bar-time)"):
        table.add_column(col, overflow="fold")
    for c in shown:
        applied = _when(c.applied_at) if c.applied_at is not None else "[yellow]pending[/]"
        table.add_row(
            str(c.seq),
            _wall(c.created),
            c.action.replace("_", "-"),
            escape(c.reason),
            escape(c.source),
            applied,
        )
    return table


def _events_table(events: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title=f"last {len(events)} risk events")
    for col in ("bar-time", "event", "symbol", "detail"):
        table.add_column(col, overflow="fold")
    for ev in events:
        ts = ev.get("ts")
        table.add_row(
            _when(int(ts)) if ts else "-",
            escape(str(ev.get("kind", ""))),
            escape(str(ev.get("symbol", ""))),
            escape(str(ev.get("detail", ""))),
        )
    return table


def _verdicts_table(counts: dict[str, int]) -> Any:
    from rich.table import Table

    table = Table(title="verdicts")
    table.add_column("status")
    table.add_column("count", justify="right")
    for name in ("approved", "resized", "rejected"):
        table.add_row(name, str(counts.get(name, 0)))
    for name, n in sorted(counts.items()):
        if name not in ("approved", "resized", "rejected"):
            table.add_row(escape(name), str(n))
    return table
