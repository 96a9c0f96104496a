"""``hflite risk``: emergency commands for a running runtime, through its SQLite journal.

The CLI never talks to the runtime directly: it queues the command in the journal's ``commands``
table; the runtime polls that table at every bar-time, applies what it finds after the mark and
before decisions, and records the bar-time it took effect at. A runtime owns its journal through
an OS lock on ``<journal>.lock`` (dropped by the OS when the process ends, kill -9 included) and
lists itself under ``var/journal/runtimes``; with the heartbeat row it writes every second, that is
how ``status`` (and ``--wait``) tell a live runtime from a dead one, and how a command finds its
runtime: ``--journal``, ``--run``, or the only live one (several live: it refuses and lists them).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import typer
from rich.console import Console
from rich.markup import escape

from hflite.cli_errors import print_error

if TYPE_CHECKING:
    from hflite.execution.oms import Owner, RuntimeBeat, SqliteJournal

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
RunOpt = Annotated[
    str | None,
    typer.Option(
        "--run",
        "-r",
        help="The run id of the runtime to act on (a live one listed by the error when several run, "
        "or a stopped one whose journal is var/journal/RUN_ID.sqlite). Default: the only live runtime.",
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


def _fail(message: str, code: int = 2, owners: list[Owner] | None = None) -> None:
    """One error line (never wrapped), then one line per runtime in ``owners``."""
    print_error(message)
    err = Console(stderr=True)
    for o in owners or []:
        config = f"  config {o.config}" if o.config else ""
        err.print(
            f"  run {o.run_id}  pid {o.pid}{config}  started {_wall(o.started)}  journal {o.journal}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
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
    folder = _folder(config)
    found = sorted(folder.glob("*.sqlite"), key=_mtime) if folder.is_dir() else []
    if not found:
        _fail(
            f"no journal in {folder}: start a runtime first (hflite replay --config configs/demo.toml "
            "--speed 86400) or pass --journal PATH"
        )
    return found[-1]


def _folder(config: Path | None) -> Path:
    """``var/journal`` next to the config's data dir: where replays keep journals and list themselves."""
    from hflite.config import ConfigError, load_data_settings

    try:
        data = load_data_settings(config)
    except ConfigError as exc:
        _fail(str(exc))
        raise
    return data.dir.parent / "journal"


class Target(NamedTuple):
    """The journal a command acts on, and the live runtime that owns it (None: not running)."""

    path: Path
    owner: Owner | None


def find_target(journal: Path | None, run: str | None, config: Path | None) -> Target:
    """``--journal``, else ``--run``, else the only live runtime of the config, else (none live) the
    newest journal; several live runtimes and no choice made is an error that lists them."""
    from hflite.execution.oms import journal_owner, live_runtimes

    if journal is not None and run is not None:
        _fail("give --run or --journal, not both")
    if journal is not None:
        path = find_journal(journal, config)
        return Target(path, journal_owner(path))
    folder = _folder(config)
    live = live_runtimes(folder)
    if run is not None:
        hits = [o for o in live if o.run_id == run]
        if len(hits) > 1:
            _fail(
                f"{len(hits)} live runtimes have run id {run!r}: name one with --journal PATH",
                owners=hits,
            )
        if hits:
            return Target(Path(hits[0].journal), hits[0])
        stopped = folder / f"{run}.sqlite"
        if stopped.is_file():
            return Target(stopped, journal_owner(stopped))
        alive = f"; live runtimes: {len(live)}" + (":" if live else " (start one with hflite replay)")
        _fail(f"no runtime with run id {run!r} in {folder}{alive}", owners=live)
    if len(live) > 1:
        _fail(f"{len(live)} runtimes are live: name one with --run RUN_ID or --journal PATH", owners=live)
    if live:
        return Target(Path(live[0].journal), live[0])
    path = find_journal(None, config)
    return Target(path, journal_owner(path))


def _open(path: Path) -> SqliteJournal:
    """The journal at ``path`` for reading and queueing; a file that is not one is a clear error."""
    from hflite.execution.oms import JournalError, SqliteJournal

    try:
        return SqliteJournal(path, create=False)
    except JournalError as exc:
        _fail(str(exc))
        raise


def is_live(beat: RuntimeBeat | None, now: float | None = None) -> bool:
    """A runtime is live when it says it is running and its heartbeat is recent."""
    if beat is None or beat.status.split(":")[0] not in ("running", "halted", "recovering"):
        return False  # a halted runtime is alive: it refuses to trade, and says why
    return (now if now is not None else time.time()) - beat.beat <= LIVE_WITHIN_S


def _check_wait(wait: float) -> None:
    if wait < 0:
        _fail(f"--wait: expected 0 or more seconds, got {wait:g}")


def _send(action: str, reason: str, target: Target, wait: float) -> None:
    """Queue one command; with a live runtime and ``wait`` > 0, report the bar-time it took effect."""
    path, owner = target
    name = action.replace("_", "-")
    out = _out()
    j = _open(path)
    try:
        seq = j.queue_command(action, reason, source="cli")
        out.print(f"queued {name} (command {seq}) in {path}", highlight=False, markup=False)
        if owner is None:
            beat = j.runtime()  # what last ran on it says how to resume it: `run` writes its book
            config = beat.config if beat is not None and beat.config else "<its config>"
            resume = (
                f"hflite run --config {config} --journal {path}"
                if j.meta("book") is not None
                else f"hflite replay --journal {path}"
            )
            out.print(
                "not running; the command will apply when it resumes: at the first bar-time of the next "
                f"start on this journal ({resume})",
                highlight=False,
                markup=False,
            )
            return
        out.print(f"for run {owner.run_id} (pid {owner.pid})", highlight=False, markup=False)
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
    run: RunOpt = None,
    config: ConfigOpt = None,
    wait: WaitOpt = 5.0,
) -> None:
    """No new entries until resumed; exits, stops and targets keep working.

    Example: hflite risk pause --reason "FOMC at 14:00" --wait 10
    """
    _check_wait(wait)
    _send("pause", reason, find_target(journal, run, config), wait)


@risk_app.command("resume")
def resume(
    reason: ReasonOpt = "",
    journal: JournalOpt = None,
    run: RunOpt = None,
    config: ConfigOpt = None,
    wait: WaitOpt = 5.0,
) -> None:
    """Lift a pause, a kill and the drawdown halt (the drawdown peak restarts from current equity).

    Example: hflite risk resume --reason "checked the fills" --journal var/journal/demo-replay.sqlite
    """
    _check_wait(wait)
    _send("resume", reason, find_target(journal, run, config), wait)


@risk_app.command("close-all")
def close_all(
    reason: ReasonOpt = "",
    journal: JournalOpt = None,
    run: RunOpt = None,
    config: ConfigOpt = None,
    wait: WaitOpt = 5.0,
    yes: YesOpt = False,
) -> None:
    """Flatten every position with market orders and keep running (new entries still allowed).

    Asks for confirmation unless --yes. Example: hflite risk close-all --reason "de-risk" --yes
    """
    _check_wait(wait)
    target = find_target(journal, run, config)
    _open(target.path).close()  # not a journal: say so before asking
    if not yes:
        typer.confirm(f"Close every position of {_who(target)}?", abort=True)
    _send("close_all", reason, target, wait)


@risk_app.command("kill")
def kill(
    reason: ReasonOpt = "",
    journal: JournalOpt = None,
    run: RunOpt = None,
    config: ConfigOpt = None,
    wait: WaitOpt = 5.0,
    yes: YesOpt = False,
) -> None:
    """Cancel every order, flatten every position and stop the runtime once flat.

    A restart on the same journal stays killed (no entries) until `hflite risk resume`.
    Asks for confirmation unless --yes. Example: hflite risk kill --reason "venue outage" --yes
    """
    _check_wait(wait)
    target = find_target(journal, run, config)
    _open(target.path).close()  # not a journal: say so before asking
    if not yes:
        typer.confirm(f"Kill {_who(target)}: cancel every order, flatten and stop?", abort=True)
    _send("kill", reason, target, wait)


def _who(target: Target) -> str:
    if target.owner is None:
        return f"the runtime on {target.path} (not running)"
    return f"run {target.owner.run_id} (pid {target.owner.pid}) on {target.path}"


@risk_app.command("status")
def status(
    journal: JournalOpt = None,
    run: RunOpt = None,
    config: ConfigOpt = None,
    events: Annotated[int, typer.Option(help="How many of the last risk events to show.")] = 10,
) -> None:
    """Is a runtime live; the persisted mode and halt; commands, last risk events and verdicts.

    A runtime is live while it holds the journal's lock (the OS drops it when the process dies) and
    writes a heartbeat row every second; the rest is read from the journal.
    Example: hflite risk status --journal var/journal/demo-replay.sqlite
    """
    from hflite.execution.oms import left_by_a_crash

    path, owner = find_target(journal, run, config)
    j = _open(path)
    try:
        beat, state = j.runtime(), j.risk_state()
        commands, last, counts = j.commands(), j.risk_events(events), j.verdict_counts()
    finally:
        j.close()
    crashed = owner is None and left_by_a_crash(path)
    out = _out()
    out.print(_runtime_table(path, _runtime_text(beat, owner, crashed), beat, state))
    out.print(_commands_table(commands))
    out.print(_events_table(last))
    out.print(_verdicts_table(counts))


def _runtime_text(beat: RuntimeBeat | None, owner: Owner | None, crashed: bool = False) -> str:
    """Live (owns the journal and beats), silent (owns it, no recent beat), gone or stopped."""
    now = time.time()
    if owner is not None:
        who = f"pid {owner.pid}, run {escape(owner.run_id)}, since {_wall(owner.started)}"
        if beat is None or beat.pid != owner.pid or beat.beat < owner.started:
            return f"[yellow]starting[/] ({who}): loading data, no heartbeat yet"
        if is_live(beat, now):
            return f"[green]live[/] ({who}, heartbeat {now - beat.beat:.1f} s ago)"
        return f"[yellow]running but silent[/] ({who}): no heartbeat for {now - beat.beat:.0f} s"
    if beat is None:
        return "[dim]no runtime has run on this journal[/]"
    age = now - beat.beat
    if beat.status == "running":
        if crashed or not _same_process_alive(beat):
            return (
                f"[red]not running[/] (last heartbeat {age:.0f} s ago, process gone): pid {beat.pid} "
                "died without stopping cleanly"
            )
        return (
            f"[red]not running[/] (last heartbeat {age:.0f} s ago): pid {beat.pid} is alive but does "
            "not hold the journal's lock"
        )
    return f"[dim]stopped[/] at {_wall(beat.beat)} (pid {beat.pid})"


def _same_process_alive(beat: RuntimeBeat) -> bool:
    """Is the process that wrote ``beat`` still there (not a new process that got its pid)?"""
    import psutil

    try:
        proc = psutil.Process(beat.pid)
        return proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= beat.started + 1.0
    except psutil.Error:  # no such process (or not ours to look at)
        return False


def _runtime_table(path: Path, runtime: str, beat: RuntimeBeat | None, state: dict[str, Any] | None) -> Any:
    from rich.table import Table

    st = state or {}
    mode = str(st.get("mode", "running"))
    colour = {"running": "green", "paused": "yellow", "killed": "red"}.get(mode, "white")
    table = Table(title="risk status", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")
    table.add_row("journal", escape(str(path)))
    table.add_row("runtime", runtime)
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
