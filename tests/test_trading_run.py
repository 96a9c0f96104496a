"""`hflite run` on the paper venue: the same orders, fills and equity as a backtest, and a restart
(after a clean stop, a crash between bar-times or a crash inside one) resumes after the journal's
last decided bar-time without re-deciding, duplicating or losing anything."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from hflite.engine.live import RecoveryError, trade
from hflite.engine.replay import replay
from hflite.engine.run import backtest
from hflite.execution.oms import SqliteJournal
from tests.conftest import make_settings
from tests.test_parity import CASES, _frames


def _paper(store, case: str = "breakout_with_take_profit", **extra):
    sections = {k: dict(v) for k, v in CASES[case].items()}
    sections["run"] = {**sections["run"], "name": "paper"}
    for k, v in extra.items():
        sections.setdefault(k, {}).update(v)
    return make_settings(store, **sections)


def _strip(frame: pd.DataFrame, prefix: str = "paper.") -> pd.DataFrame:
    out = frame.copy()
    for col in ("order_id", "parent_id", "id"):
        if col in out:
            out[col] = out[col].map(
                lambda v: v[len(prefix) :] if isinstance(v, str) and v.startswith(prefix) else v
            )
    return out


def _assert_same(bt, run) -> None:
    bt_orders, bt_fills = _frames(bt)
    rn_orders, rn_fills = _frames(run)
    pd.testing.assert_frame_equal(_strip(bt_orders), _strip(rn_orders))
    pd.testing.assert_frame_equal(_strip(bt_fills), _strip(rn_fills))
    pd.testing.assert_frame_equal(bt.trades, run.trades)
    pd.testing.assert_series_equal(bt.equity, run.equity, check_exact=False, rtol=1e-12)


class _Crash(Exception):
    pass


def _crash_after(n: int):
    seen = {"steps": 0}

    def status(book) -> None:
        seen["steps"] += 1
        if seen["steps"] == n:
            raise _Crash(f"crash after {n} bar-times")

    return status


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_paper_on_recorded_bars_trades_exactly_like_the_backtest(case, sample_store, tmp_path: Path):
    settings = _paper(sample_store, case)
    bt = backtest(settings, sample_store, run_id="bt")
    out = asyncio.run(trade(settings, sample_store, feed="recorded", journal_path=tmp_path / "j.sqlite"))
    assert out.result is not None and out.resumed_from is None
    _assert_same(bt, out.result)


def test_client_order_ids_come_from_the_decision_and_carry_the_run_name(sample_store, tmp_path: Path):
    settings = _paper(sample_store)
    out = asyncio.run(trade(settings, sample_store, feed="recorded", journal_path=tmp_path / "j.sqlite"))
    ids = out.result.orders.order_id.tolist()
    assert len(ids) == len(set(ids)) > 20
    first = ids[0]  # run name . strategy - symbol - bar time - kind and sequence within that bar
    assert first.startswith("paper.breakout-") and first.rsplit("-", 1)[1] in ("e1", "x1")
    assert any(i.endswith("-sl") or i.endswith("-tp") for i in ids)


@pytest.mark.parametrize("crash_at", [1, 37, 250])
def test_a_crash_between_bar_times_resumes_after_the_last_decided_one(sample_store, tmp_path: Path, crash_at):
    settings = _paper(sample_store)
    bt = backtest(settings, sample_store, run_id="bt")
    path = tmp_path / "j.sqlite"
    with pytest.raises(_Crash):
        asyncio.run(
            trade(settings, sample_store, feed="recorded", journal_path=path, status=_crash_after(crash_at))
        )
    j = SqliteJournal(path)
    first, last, steps = j.progress()
    n_orders = len(j.order_statuses())
    j.close()
    assert steps == crash_at
    out = asyncio.run(trade(settings, sample_store, feed="recorded", journal_path=path))
    assert out.resumed_from == last
    _assert_same(bt, out.result)
    j = SqliteJournal(path)
    try:  # every order journaled once: the re-run bars wrote nothing
        assert len(j.order_statuses()) == len(out.result.orders) >= n_orders
        created = j.db.execute("SELECT COUNT(*) FROM events WHERE kind = 'order_created'").fetchone()[0]
        assert created == len(out.result.orders)
        assert j.progress()[2] == len(out.result.equity)  # each bar-time decided once over both runs
    finally:
        j.close()


def test_a_crash_inside_a_bar_time_re_runs_it_with_the_same_order_ids(
    sample_store, tmp_path: Path, monkeypatch
):
    settings = _paper(sample_store)
    bt = backtest(settings, sample_store, run_id="bt")
    path = tmp_path / "j.sqlite"
    real = SqliteJournal.decided
    calls = {"n": 0}
    first_orders = {"ids": set()}

    def decided(self, bar_ts):
        calls["n"] += 1
        now = set(self.order_statuses())
        if calls["n"] > 60 and now - first_orders["ids"]:  # this bar-time made orders
            raise _Crash("crash after the bar's orders were journaled, before it was marked decided")
        first_orders["ids"] = now
        return real(self, bar_ts)

    monkeypatch.setattr(SqliteJournal, "decided", decided)
    with pytest.raises(_Crash):
        asyncio.run(trade(settings, sample_store, feed="recorded", journal_path=path))
    monkeypatch.setattr(SqliteJournal, "decided", real)
    j = SqliteJournal(path)
    undecided = set(j.order_statuses()) - first_orders["ids"]
    j.close()
    assert undecided, "the crash must leave orders journaled for a bar-time not marked decided"
    out = asyncio.run(trade(settings, sample_store, feed="recorded", journal_path=path))
    _assert_same(bt, out.result)
    assert undecided <= set(out.result.orders.order_id)


def test_a_finished_run_restarted_decides_nothing_new(sample_store, tmp_path: Path):
    settings = _paper(sample_store)
    path = tmp_path / "j.sqlite"
    first = asyncio.run(trade(settings, sample_store, feed="recorded", journal_path=path))
    again = asyncio.run(trade(settings, sample_store, feed="recorded", journal_path=path))
    assert again.resumed_from is not None
    _assert_same(first.result, again.result)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM events WHERE kind = 'order_created'").fetchone()[0] == len(
            first.result.orders
        )


def test_a_journal_whose_decisions_a_changed_config_cannot_remake_is_refused(sample_store, tmp_path: Path):
    path = tmp_path / "j.sqlite"
    with pytest.raises(_Crash):
        asyncio.run(trade(_paper(sample_store), sample_store, feed="recorded", journal_path=path,
                          status=_crash_after(300)))  # fmt: skip
    changed = _paper(sample_store, strategy={"entry_period": 30})
    with pytest.raises(
        RecoveryError, match="re-running its decided bars made order .* which it never recorded"
    ):
        asyncio.run(trade(changed, sample_store, feed="recorded", journal_path=path))


def test_replay_on_its_own_journal_resumes_instead_of_starting_its_window_over(sample_store, tmp_path: Path):
    settings = _paper(sample_store)
    path = tmp_path / "replay.sqlite"
    full = asyncio.run(replay(settings, sample_store, run_id="a", journal_path=tmp_path / "full.sqlite"))
    asyncio.run(replay(settings, sample_store, run_id="b", journal_path=path))
    again = asyncio.run(replay(settings, sample_store, run_id="c", journal_path=path))
    pd.testing.assert_frame_equal(_frames(full)[0], _frames(again)[0])
    with sqlite3.connect(path) as db:
        created = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'order_created'").fetchone()[0]
    assert created == len(full.orders)
