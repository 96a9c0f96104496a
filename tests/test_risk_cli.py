"""`hflite risk ...` against a real runtime: a replay in a background thread, the CLI in this one,
talking only through the runtime's SQLite journal."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hflite.cli import app
from hflite.cli.risk import LIVE_WITHIN_S, is_live
from hflite.domain.signal import RiskVerdict, VerdictStatus
from hflite.engine.replay import replay
from hflite.engine.result import RunResult
from hflite.execution.oms import JournalBusyError, RuntimeBeat, SqliteJournal
from tests.conftest import make_settings

runner = CliRunner()
WIDE = {"COLUMNS": "250"}  # no wrapping in rich tables, so the output can be searched


def _settings(store, **sections):
    base = {
        "run": {"symbols": ["SPY", "BTC-USD"], "start": "2019-01-02", "end": "2019-12-31"},
        "strategy": {"name": "trend", "fast": 5, "slow": 20},
    }
    return make_settings(store, **{**base, **sections})


class Background:
    """A replay running in its own thread and event loop, as a runtime runs beside the CLI."""

    def __init__(self, settings, store, path: Path, speed: float | None) -> None:
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(settings, store, path, speed), daemon=True)
        self.thread.start()

    def _run(self, settings, store, path, speed) -> None:
        try:
            self.result = asyncio.run(replay(settings, store, run_id="bg", journal_path=path, speed=speed))
        except BaseException as exc:  # handed to the test thread
            self.error = exc

    def wait(self, timeout: float = 20.0) -> RunResult:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the runtime did not finish in time"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def _poll(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def _read(path: Path, fn):
    j = SqliteJournal(path)
    try:
        return fn(j)
    finally:
        j.close()


def _wait_live(path: Path) -> None:
    _poll(lambda: path.exists() and is_live(_read(path, lambda j: j.runtime())))


def _entries(result: RunResult) -> pd.DataFrame:
    v = result.verdicts
    return v[~v.reason.str.startswith("exit:")]


def _risk(*args: str):
    return runner.invoke(app, ["risk", *args], env=WIDE)


def _bar(ns: int) -> pd.Timestamp:
    return pd.Timestamp(ns, unit="ns", tz="UTC")


# -- against a live runtime -----------------------------------------------------------------------
def test_pause_takes_effect_at_a_bar_time_and_every_later_entry_is_rejected(sample_store, tmp_path):
    path = tmp_path / "journal.sqlite"
    bg = Background(_settings(sample_store), sample_store, path, speed=86400 * 250)
    _wait_live(path)

    cli = _risk("pause", "--journal", str(path), "--reason", "news pending", "--wait", "5")
    result = bg.wait()

    assert cli.exit_code == 0, cli.output
    (cmd,) = _read(path, lambda j: j.commands())
    assert cmd.action == "pause" and cmd.applied_at is not None
    applied = _bar(cmd.applied_at)
    assert applied in result.equity.index  # a bar-time of the run
    assert f"applied at bar time {applied:%Y-%m-%d %H:%M} UTC" in cli.output
    later = _entries(result)[lambda v: v.ts >= applied]
    assert len(later) >= 3
    assert (later.status == "rejected").all()
    assert later.reason.str.startswith("paused by a human: news pending").all()


def test_kill_flattens_the_book_and_stops_the_runtime(sample_store, tmp_path):
    path = tmp_path / "journal.sqlite"
    bg = Background(_settings(sample_store), sample_store, path, speed=86400 * 10)
    _wait_live(path)
    _poll(lambda: _read(path, lambda j: j.db.execute("SELECT 1 FROM events WHERE kind = 'fill'").fetchone()))

    cli = _risk("kill", "--journal", str(path), "--reason", "venue outage", "--yes")
    result = bg.wait()

    assert cli.exit_code == 0, cli.output
    assert "applied at bar time" in cli.output
    assert result.equity.index[-1] < pd.Timestamp("2019-07-01", tz="UTC")  # stopped long before the end
    assert (result.positions.iloc[-1] == 0).all()
    assert result.orders.reason.str.startswith("kill: venue outage").any()
    assert _read(path, lambda j: j.risk_state())["mode"] == "killed"
    assert _read(path, lambda j: j.runtime()).status == "stopped"


def test_status_tells_a_live_runtime_from_a_stopped_one(sample_store, tmp_path):
    path = tmp_path / "journal.sqlite"
    bg = Background(_settings(sample_store), sample_store, path, speed=86400 * 300)
    _wait_live(path)

    while_running = _risk("status", "--journal", str(path))
    bg.wait()
    after = _risk("status", "--journal", str(path))

    assert while_running.exit_code == 0, while_running.output
    assert "live (pid" in while_running.output
    assert after.exit_code == 0, after.output
    assert "stopped at" in after.output and "live (pid" not in after.output


def test_a_second_replay_on_a_live_journal_refuses_and_a_kill_stops_the_only_runtime(sample_store, tmp_path):
    path = tmp_path / "journal.sqlite"
    bg = Background(_settings(sample_store), sample_store, path, speed=86400 * 10)
    _wait_live(path)

    with pytest.raises(JournalBusyError, match=rf"run bg \(pid {os.getpid()}, started"):
        asyncio.run(replay(_settings(sample_store), sample_store, run_id="second", journal_path=path))
    cli = _risk("kill", "--journal", str(path), "--reason", "drill", "--yes")
    bg.wait()
    status = _risk("status", "--journal", str(path))

    assert cli.exit_code == 0, cli.output
    assert "for run bg" in cli.output
    assert _read(path, lambda j: j.runtime()).status == "stopped"
    assert "mode" in status.output and "killed" in status.output and "stopped at" in status.output


# -- restarts on the same journal -----------------------------------------------------------------
def test_a_command_queued_with_no_runtime_applies_at_the_first_bar_time_of_the_next_start(
    sample_store, tmp_path
):
    path = tmp_path / "journal.sqlite"
    SqliteJournal(path).close()  # the journal of an earlier run

    cli = _risk("pause", "--journal", str(path), "--reason", "weekend")
    result = asyncio.run(replay(_settings(sample_store), sample_store, journal_path=path))

    assert cli.exit_code == 0, cli.output
    assert "not running; the command will apply when it resumes" in cli.output
    (cmd,) = _read(path, lambda j: j.commands())
    assert _bar(cmd.applied_at) == result.equity.index[0]
    assert (_entries(result).status == "rejected").all()


def _until(store, end: str, **sections):
    """The same run with its window ending at ``end``: a restart with a later end carries on after the
    journal's last decided bar-time (re-running nothing, deciding only the new bar-times)."""
    run = {"symbols": ["SPY", "BTC-USD"], "start": "2019-01-02", "end": end}
    return _settings(store, run=run, **sections)


def _after(result, end: str):
    entries = _entries(result)
    return entries[entries.ts > pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)]


def test_a_restart_keeps_the_pause_in_force_until_a_human_resumes(sample_store, tmp_path):
    path = tmp_path / "journal.sqlite"
    SqliteJournal(path).close()
    _risk("pause", "--journal", str(path), "--reason", "weekend")
    asyncio.run(replay(_until(sample_store, "2019-04-30"), sample_store, journal_path=path))

    restarted = asyncio.run(replay(_until(sample_store, "2019-08-30"), sample_store, journal_path=path))
    resume = _risk("resume", "--journal", str(path), "--reason", "back", "--wait", "0")
    resumed = asyncio.run(replay(_until(sample_store, "2019-12-31"), sample_store, journal_path=path))

    new = _after(restarted, "2019-04-30")
    assert len(new) and new.iloc[0].reason.startswith("paused by a human: weekend")
    assert (new.status == "rejected").all()
    assert resume.exit_code == 0, resume.output
    assert (_after(resumed, "2019-08-30").status != "rejected").any()
    assert _read(path, lambda j: j.risk_state())["mode"] == "running"


def test_a_restart_keeps_the_drawdown_halt_and_status_shows_why(sample_store, tmp_path):
    path = tmp_path / "journal.sqlite"
    limits = {"max_drawdown_pct": 1, "drawdown_reduce_pct": 0.5}
    first_run = asyncio.run(
        replay(_until(sample_store, "2019-08-30", risk=limits), sample_store, journal_path=path)
    )
    assert first_run.halted_at is not None, "the run must trip the halt for this test to mean anything"

    restarted = asyncio.run(
        replay(_until(sample_store, "2019-12-31", risk=limits), sample_store, journal_path=path)
    )
    status = _risk("status", "--journal", str(path))

    new = _after(restarted, "2019-08-30")
    assert len(new) and (new.status == "rejected").all()
    assert new.iloc[0].reason.startswith("halted: drawdown")
    assert status.exit_code == 0, status.output
    assert "halted: drawdown" in status.output
    assert "approved" in status.output and "rejected" in status.output


# -- the CLI itself -------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["pause", "resume", "close-all", "kill", "status"])
def test_every_risk_command_explains_itself_with_an_example(command):
    result = runner.invoke(app, ["risk", command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


def test_no_journal_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\ndir = "{(tmp_path / "data").as_posix()}"\n')

    by_config = _risk("pause", "--config", str(cfg))
    by_path = _risk("status", "--journal", str(tmp_path / "nope.sqlite"))

    assert by_config.exit_code == 2
    assert "no journal in" in by_config.output and "--journal PATH" in by_config.output
    assert by_path.exit_code == 2
    assert "no journal at" in by_path.output


def test_without_a_path_it_acts_on_the_newest_journal_next_to_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\ndir = "{(tmp_path / "var" / "data").as_posix()}"\n')
    older, newer = tmp_path / "var" / "journal" / "a.sqlite", tmp_path / "var" / "journal" / "b.sqlite"
    for p in (newer, older):
        SqliteJournal(p).close()
    os.utime(older, (time.time() - 3600, time.time() - 3600))
    for wal in older.parent.glob("a.sqlite-*"):
        os.utime(wal, (time.time() - 3600, time.time() - 3600))

    result = _risk("pause", "--config", str(cfg), "--wait", "0")

    assert result.exit_code == 0, result.output
    assert len(_read(newer, lambda j: j.commands())) == 1
    assert _read(older, lambda j: j.commands()) == []


def test_kill_asks_for_confirmation_and_queues_nothing_when_refused(tmp_path):
    path = tmp_path / "journal.sqlite"
    SqliteJournal(path).close()

    result = runner.invoke(app, ["risk", "kill", "--journal", str(path)], input="n\n")

    assert result.exit_code == 1
    assert "Kill the runtime" in result.output
    assert _read(path, lambda j: j.commands()) == []


def test_close_all_queues_after_a_yes(tmp_path):
    path = tmp_path / "journal.sqlite"
    SqliteJournal(path).close()

    result = runner.invoke(app, ["risk", "close-all", "--journal", str(path)], input="y\n")

    assert result.exit_code == 0, result.output
    assert [c.action for c in _read(path, lambda j: j.commands())] == ["close_all"]


# -- the journal's command queue and heartbeat ----------------------------------------------------
def test_queued_commands_are_pending_oldest_first_until_marked_applied(tmp_path):
    j = SqliteJournal(tmp_path / "j.sqlite")
    first = j.queue_command("pause", "lunch")
    second = j.queue_command("resume")

    assert [c.action for c in j.pending_commands()] == ["pause", "resume"]
    j.mark_applied(first, 1_000)
    assert [c.seq for c in j.pending_commands()] == [second]
    assert j.applied_at(first) == 1_000 and j.applied_at(second) is None
    assert [(c.action, c.reason, c.source, c.applied_at) for c in j.commands()] == [
        ("pause", "lunch", "cli", 1_000),
        ("resume", "", "cli", None),
    ]
    j.close()


def test_a_command_is_applied_once(tmp_path):
    j = SqliteJournal(tmp_path / "j.sqlite")
    seq = j.queue_command("kill")
    j.mark_applied(seq, 1_000)
    j.mark_applied(seq, 2_000)
    assert j.applied_at(seq) == 1_000
    j.close()


def test_an_unknown_command_is_refused_before_it_reaches_the_runtime(tmp_path):
    j = SqliteJournal(tmp_path / "j.sqlite")
    with pytest.raises(ValueError, match="unknown risk command 'halt'"):
        j.queue_command("halt")
    assert j.commands() == []
    j.close()


def test_another_connection_sees_queued_commands(tmp_path):
    cli, runtime = SqliteJournal(tmp_path / "j.sqlite"), SqliteJournal(tmp_path / "j.sqlite")
    cli.queue_command("pause", "from the CLI")
    assert [c.reason for c in runtime.pending_commands()] == ["from the CLI"]
    runtime.mark_applied(runtime.pending_commands()[0].seq, 5)
    assert cli.pending_commands() == []
    cli.close()
    runtime.close()


def test_heartbeat_keeps_the_start_and_the_last_bar_time(tmp_path):
    j = SqliteJournal(tmp_path / "j.sqlite")
    assert j.runtime() is None
    j.heartbeat("running", 10)
    started = j.runtime().started
    j.heartbeat("running")
    j.heartbeat("stopped")
    beat = j.runtime()
    assert beat.status == "stopped" and beat.bar_ts == 10 and beat.started == started
    assert beat.pid == os.getpid()
    j.close()


def test_a_runtime_is_live_only_while_running_with_a_recent_heartbeat():
    now = 1_000_000.0
    assert is_live(RuntimeBeat(1, now - 60, now - 1, "running", None), now)
    assert not is_live(RuntimeBeat(1, now - 60, now - LIVE_WITHIN_S - 1, "running", None), now)
    assert not is_live(RuntimeBeat(1, now - 60, now, "stopped", None), now)
    assert not is_live(None, now)


def test_verdict_counts_and_risk_events_come_from_the_journal(tmp_path):
    j = SqliteJournal(tmp_path / "j.sqlite")
    for n, status in enumerate(["approved", "approved", "rejected"]):
        j.verdict(RiskVerdict(f"i{n}", "SPY", n, VerdictStatus(status), 1.0, 1.0, "why"))
    for n in range(3):
        j.risk_event({"ts": n, "kind": "pause", "symbol": "", "detail": f"e{n}"}, {"mode": "paused"})

    assert j.verdict_counts() == {"approved": 2, "rejected": 1}
    assert [e["detail"] for e in j.risk_events(last=2)] == ["e1", "e2"]
    assert j.risk_state() == {"mode": "paused"}
    j.close()
