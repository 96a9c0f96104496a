"""One journal, one runtime: the OS lock that makes a second runtime refuse, what `hflite risk` says
when the owner is gone, which runtime a command goes to, and files that are not journals.

The holders here are real processes (a tiny script that takes a journal's lock, or `hflite replay`),
because a lock is only worth something between processes and after a kill -9."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hflite.cli import app
from hflite.execution.oms import (
    JournalBusyError,
    JournalError,
    JournalLock,
    SqliteJournal,
    journal_owner,
    live_runtimes,
)

runner = CliRunner()
WIDE = {"COLUMNS": "250"}
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs kill -9 (POSIX)")

#: A process that owns a journal until it is killed: takes the lock, opens the journal, beats once.
HOLD = """
import sys, time
from pathlib import Path
from hflite.execution.oms import JournalLock, SqliteJournal
path, run_id, registry = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = JournalLock(path)
lock.acquire(run_id, config=f"configs/{run_id}.toml", registry=Path(registry) if registry else None)
journal = SqliteJournal(path, owner=lock)
journal.heartbeat("running", 1_000)
print("ready", flush=True)
time.sleep(120)
"""

Holder = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def hold() -> Iterator[Holder]:
    """Start processes that own a journal; every one still running is killed after the test."""
    procs: list[subprocess.Popen[str]] = []

    def start(path: Path, run_id: str = "holder", registry: Path | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, "-c", HOLD, str(path), run_id, str(registry or "")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else "no output"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _kill9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def _risk(*args: str, stdin: str | None = None):
    return runner.invoke(app, ["risk", *args], env=WIDE, input=stdin)


def _config(tmp_path: Path, data_dir: Path | None = None) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\ndir = "{(data_dir or tmp_path / "var" / "data").as_posix()}"\n')
    return cfg


def _commands(path: Path) -> list[str]:
    j = SqliteJournal(path)
    try:
        return [c.action for c in j.commands()]
    finally:
        j.close()


# -- one owner per journal ------------------------------------------------------------------------
def test_a_second_runtime_on_a_journal_refuses_naming_the_pid_run_and_start_that_hold_it(hold, tmp_path):
    path = tmp_path / "j.sqlite"
    holder = hold(path, "first-run")

    with pytest.raises(JournalBusyError) as caught:
        JournalLock(path).acquire("second-run")

    message = str(caught.value)
    assert f"pid {holder.pid}" in message
    assert "run first-run" in message
    assert re.search(r"started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", message)
    assert str(path) in message and "\n" not in message


def test_the_owner_of_a_journal_is_read_from_its_lock(hold, tmp_path):
    path = tmp_path / "j.sqlite"
    holder = hold(path, "owner-run")

    owner = journal_owner(path)

    assert owner is not None
    assert (owner.pid, owner.run_id, owner.config) == (holder.pid, "owner-run", "configs/owner-run.toml")
    assert owner.journal == str(path.resolve())
    assert abs(owner.started - time.time()) < 60


def test_a_sigkilled_owner_releases_the_journal(hold, tmp_path):
    path = tmp_path / "j.sqlite"
    holder = hold(path)

    _kill9(holder)
    lock = JournalLock(path)
    owner = lock.acquire("after-the-crash")

    assert journal_owner(path) == owner
    lock.release()
    assert journal_owner(path) is None


def test_a_released_lock_can_be_taken_again_in_the_same_process(tmp_path):
    path = tmp_path / "j.sqlite"
    first = JournalLock(path)
    first.acquire("one")
    first.release()

    second = JournalLock(path)
    second.acquire("two")

    assert journal_owner(path).run_id == "two"
    second.release()


def test_two_locks_in_one_process_exclude_each_other(tmp_path):
    path = tmp_path / "j.sqlite"
    first = JournalLock(path)
    first.acquire("one")

    with pytest.raises(JournalBusyError, match="run one"):
        JournalLock(path).acquire("two", wait_s=0.0)
    first.release()


def test_hflite_replay_on_an_owned_journal_is_one_clear_error_line(hold, tmp_path, sample_store):
    path = tmp_path / "j.sqlite"
    holder = hold(path, "the-owner")
    cfg = tmp_path / "run.toml"
    cfg.write_text(_run_toml(sample_store.root))

    result = runner.invoke(app, ["replay", "--config", str(cfg), "--journal", str(path)], env=WIDE)

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    line = lines[0]
    assert line.startswith("error: ") and f"pid {holder.pid}" in line and "run the-owner" in line


def _run_toml(data_dir: Path) -> str:
    return (
        '[run]\nsymbols = ["SPY"]\nstart = "2019-01-02"\nend = "2019-12-31"\nbenchmarks = ["SPY"]\n'
        '[strategy]\nname = "trend"\nfast = 5\nslow = 20\n'
        f'[data]\ndir = "{data_dir.as_posix()}"\n[llm]\nmode = "off"\n'
    )


def test_a_real_replay_killed_with_sigkill_is_reported_gone_and_its_journal_can_be_resumed(
    tmp_path, sample_store
):
    path = tmp_path / "j.sqlite"
    cfg = tmp_path / "run.toml"
    cfg.write_text(_run_toml(sample_store.root))
    proc = subprocess.Popen(  # noqa: S603 - the project's own CLI
        [
            sys.executable,
            "-c",
            "from hflite.cli import app; app()",
            "replay",
            "--config",
            str(cfg),
            "--journal",
            str(path),
            "--speed",
            "86400",
            "--out",
            str(tmp_path / "r1"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while journal_owner(path) is None or not _has_beat(path):
            assert proc.poll() is None and time.monotonic() < deadline, "the replay did not start"
            time.sleep(0.1)
        second = runner.invoke(app, ["replay", "--config", str(cfg), "--journal", str(path)], env=WIDE)
        _kill9(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)

    status = _risk("status", "--journal", str(path))
    resumed = runner.invoke(
        app, ["replay", "--config", str(cfg), "--journal", str(path), "--out", str(tmp_path / "r2")], env=WIDE
    )

    assert second.exit_code == 2 and f"pid {proc.pid}" in second.output
    assert status.exit_code == 0, status.output
    assert re.search(r"not running \(last heartbeat \d+ s ago, process gone\)", status.output)
    assert resumed.exit_code == 0, resumed.output


def _has_beat(path: Path) -> bool:
    if not path.exists():
        return False
    j = SqliteJournal(path)
    try:
        return j.runtime() is not None
    finally:
        j.close()


# -- status when the owner is gone ----------------------------------------------------------------
def test_status_after_a_kill_9_says_not_running_with_the_heartbeat_age_and_process_gone(hold, tmp_path):
    path = tmp_path / "j.sqlite"
    _kill9(hold(path))

    result = _risk("status", "--journal", str(path))

    assert result.exit_code == 0, result.output
    assert re.search(r"not running \(last heartbeat \d+ s ago, process gone\)", result.output)
    assert "live (pid" not in result.output


def test_status_of_a_live_owner_says_live_with_its_pid_and_run(hold, tmp_path):
    path = tmp_path / "j.sqlite"
    holder = hold(path, "busy-run")

    result = _risk("status", "--journal", str(path))

    assert result.exit_code == 0, result.output
    assert f"live (pid {holder.pid}, run busy-run" in result.output


def test_a_command_to_a_journal_whose_owner_died_says_not_running_and_applies_when_it_resumes(hold, tmp_path):
    path = tmp_path / "j.sqlite"
    _kill9(hold(path))

    result = _risk("pause", "--journal", str(path), "--reason", "r")

    assert result.exit_code == 0, result.output
    assert "not running; the command will apply when it resumes" in result.output
    assert _commands(path) == ["pause"]


# -- which runtime a command goes to --------------------------------------------------------------
def test_with_two_live_runtimes_a_command_without_a_target_refuses_and_lists_them(hold, tmp_path):
    cfg = _config(tmp_path)
    folder = tmp_path / "var" / "journal"
    a, b = folder / "a.sqlite", tmp_path / "elsewhere" / "b.sqlite"  # b is outside the folder
    pa, pb = hold(a, "run-a", folder), hold(b, "run-b", folder)

    result = _risk("pause", "--config", str(cfg), "--reason", "which one?")

    assert result.exit_code == 2, result.output
    assert "2 runtimes are live" in result.output and "--run" in result.output
    assert "--journal" in result.output
    for run_id, proc in (("run-a", pa), ("run-b", pb)):
        row = next(ln for ln in result.output.splitlines() if run_id in ln)
        assert f"pid {proc.pid}" in row and f"configs/{run_id}.toml" in row and "started" in row
    assert _commands(a) == [] and _commands(b) == []


def test_status_with_two_live_runtimes_also_asks_which_one(hold, tmp_path):
    cfg = _config(tmp_path)
    folder = tmp_path / "var" / "journal"
    hold(folder / "a.sqlite", "run-a", folder)
    hold(folder / "b.sqlite", "run-b", folder)

    result = _risk("status", "--config", str(cfg))

    assert result.exit_code == 2
    assert "run-a" in result.output and "run-b" in result.output


def test_run_names_the_runtime_a_command_goes_to(hold, tmp_path):
    cfg = _config(tmp_path)
    folder = tmp_path / "var" / "journal"
    a, b = folder / "a.sqlite", tmp_path / "elsewhere" / "b.sqlite"
    hold(a, "run-a", folder)
    pb = hold(b, "run-b", folder)

    result = _risk("pause", "--config", str(cfg), "--run", "run-b", "--wait", "0")

    assert result.exit_code == 0, result.output
    assert _commands(b) == ["pause"] and _commands(a) == []
    assert f"for run run-b (pid {pb.pid})" in result.output


def test_an_unknown_run_is_a_clear_error_listing_the_live_ones(hold, tmp_path):
    cfg = _config(tmp_path)
    folder = tmp_path / "var" / "journal"
    hold(folder / "a.sqlite", "run-a", folder)

    result = _risk("pause", "--config", str(cfg), "--run", "nope")

    assert result.exit_code == 2
    assert "no runtime with run id 'nope'" in result.output and "run-a" in result.output


def test_run_and_journal_together_are_refused(tmp_path):
    path = tmp_path / "j.sqlite"
    SqliteJournal(path).close()

    result = _risk("pause", "--journal", str(path), "--run", "x")

    assert result.exit_code == 2
    assert "--run or --journal, not both" in result.output


def test_with_one_live_runtime_a_command_targets_it_and_says_which(hold, tmp_path):
    cfg = _config(tmp_path)
    folder = tmp_path / "var" / "journal"
    live = folder / "live.sqlite"
    proc = hold(live, "the-live-one", folder)
    SqliteJournal(folder / "newer-but-stopped.sqlite").close()  # the newest file is not the target

    result = _risk("pause", "--config", str(cfg), "--wait", "0")

    assert result.exit_code == 0, result.output
    assert _commands(live) == ["pause"]
    assert _commands(folder / "newer-but-stopped.sqlite") == []
    assert f"run the-live-one (pid {proc.pid})" in result.output


def test_a_stopped_run_can_be_named_by_its_journal_s_run_id(tmp_path):
    cfg = _config(tmp_path)
    folder = tmp_path / "var" / "journal"
    SqliteJournal(folder / "demo-trend-1-replay.sqlite").close()
    SqliteJournal(folder / "other.sqlite").close()

    result = _risk("resume", "--config", str(cfg), "--run", "demo-trend-1-replay")

    assert result.exit_code == 0, result.output
    assert _commands(folder / "demo-trend-1-replay.sqlite") == ["resume"]
    assert "not running; the command will apply when it resumes" in result.output


def test_live_runtimes_ignore_a_registration_left_by_a_crash(hold, tmp_path):
    folder = tmp_path / "var" / "journal"
    _kill9(hold(folder / "dead.sqlite", "dead", folder))
    alive = hold(folder / "alive.sqlite", "alive", folder)

    owners = live_runtimes(folder)

    assert [(o.run_id, o.pid) for o in owners] == [("alive", alive.pid)]


# -- files that are not journals ------------------------------------------------------------------
@pytest.mark.parametrize("command", [["status"], ["kill", "--yes"], ["pause"]])
def test_a_file_that_is_not_sqlite_is_named_as_not_a_journal(tmp_path, command):
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 20)

    result = _risk(*command, "--journal", str(path))

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"{path} is not an hflite journal (not a SQLite database)" in result.output
    assert path.read_text().startswith("these are my notes")


def test_a_sqlite_file_without_the_journal_s_tables_is_not_a_journal_and_is_left_untouched(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE recipes (name TEXT)")
    db.commit()
    db.close()

    status = _risk("status", "--journal", str(path))
    kill = _risk("kill", "--yes", "--journal", str(path))

    for result in (status, kill):
        assert result.exit_code == 2, result.output
        assert f"{path} is not an hflite journal" in result.output and "Traceback" not in result.output
    db = sqlite3.connect(path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert tables == {"recipes"}


def test_opening_a_file_that_is_not_sqlite_raises_a_journal_error_naming_it(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 20)

    with pytest.raises(JournalError, match="notes.txt is not an hflite journal"):
        SqliteJournal(path)


def test_hflite_replay_on_a_file_that_is_not_a_journal_is_one_clear_error_line(tmp_path, sample_store):
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 20)
    cfg = tmp_path / "run.toml"
    cfg.write_text(_run_toml(sample_store.root))

    result = runner.invoke(app, ["replay", "--config", str(cfg), "--journal", str(path)], env=WIDE)

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "is not an hflite journal (not a SQLite database)" in result.output


def test_status_while_the_owner_loads_its_data_says_starting(tmp_path):
    path = tmp_path / "j.sqlite"
    SqliteJournal(path).close()
    lock = JournalLock(path)
    lock.acquire("loading")  # a replay takes the journal before it loads data and beats

    result = _risk("status", "--journal", str(path))
    lock.release()

    assert result.exit_code == 0, result.output
    assert f"starting (pid {os.getpid()}, run loading" in result.output
