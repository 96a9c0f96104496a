"""``hflite backup`` / ``hflite restore``: incremental checksummed snapshots, retention, a full disk, a
live journal, the archive tier, and a restore that reruns a backtest to the same result."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import joblib
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from hflite.ai.llm.journal import LLMJournal
from hflite.cli import app as hflite_app
from hflite.cli import ops as ops_cli
from hflite.config import load_settings
from hflite.data.store import DataNotFoundError, Store
from hflite.execution.oms import JournalLock, SqliteJournal
from hflite.ops import backup as bk

runner = CliRunner()

# the three commands as `hflite.cli` registers them (top-level backup, restore, mlflow-ui)
cli = typer.Typer()
cli.command("backup")(ops_cli.backup)
cli.command("restore")(ops_cli.restore)
cli.command("mlflow-ui")(ops_cli.mlflow_ui)

CONFIG = """
[run]
name = "bk"
symbols = ["SPY"]
start = "2015-01-02"
end = "2019-12-31"
benchmarks = []

[strategy]
name = "trend"
fast = 10

[data]
dir = "var/data"

[report]
dir = "reports"

[llm]
mode = "off"
"""


def _project(root: Path, sample_store: Store) -> Path:
    """A working folder as a runtime leaves it: the store (the embedded sample), a journal, a model,
    the LLM journal, a log and a config."""
    root.mkdir(parents=True)
    shutil.copytree(sample_store.root, root / "var/data", ignore=shutil.ignore_patterns(".lock"))
    journal = SqliteJournal(root / "var/journal/bk.sqlite")
    journal.set_meta("book", json.dumps({"equity": 100_000.0}))
    journal.close()
    model = root / "var/models/m-1"
    model.mkdir(parents=True)
    joblib.dump({"coef": [0.1, 0.2]}, model / "model.joblib")
    (model / "meta.json").write_text(json.dumps({"id": "m-1", "kind": "logistic"}))
    LLMJournal(root / "var/llm/journal.sqlite").close()
    (root / "var/logs").mkdir(parents=True)
    (root / "var/logs/bk.jsonl").write_text('{"event": "run.start"}\n')
    (root / "configs").mkdir()
    (root / "configs/bk.toml").write_text(CONFIG)
    return root


@pytest.fixture
def project(tmp_path: Path, sample_store: Store, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = _project(tmp_path / "proj", sample_store)
    monkeypatch.chdir(root)
    return root


def _settings(project: Path):
    return load_settings(project / "configs/bk.toml", trades=False)


def _files(manifest: dict) -> dict[str, dict]:
    return {e["path"]: e for e in manifest["files"]}


def _manifest(snapshot: Path) -> dict:
    return json.loads((snapshot / "manifest.json").read_text())


def _final_equity(report: Path) -> float:
    return json.loads((report / "metrics.json").read_text())["metrics"]["final_equity"]


def test_a_snapshot_holds_every_part_with_its_checksums(project: Path, tmp_path: Path):
    result = bk.backup(_settings(project), tmp_path / "bak")

    manifest = _manifest(result.snapshot)
    files = _files(manifest)
    assert set(manifest["sources"]) >= {"data", "journal", "models", "llm", "logs", "reports"}
    assert {"data/manifest.json", "journal/bk.sqlite", "models/m-1/model.joblib", "llm/journal.sqlite",
            "logs/bk.jsonl"} <= set(files)  # fmt: skip
    assert any(p.startswith("data/bars/asset_class=etf/symbol=SPY/") for p in files)
    for path, entry in files.items():
        on_disk = result.snapshot / path
        assert on_disk.stat().st_size == entry["size"]
        assert bk._sha256(on_disk) == entry["sha256"]
        assert int(entry["mode"], 8) == on_disk.stat().st_mode & 0o7777
    names = [p.name for p in result.snapshot.rglob("*")]
    assert not [n for n in names if n.endswith(("-wal", "-shm", ".lock"))]
    assert files["journal/bk.sqlite"]["sqlite"] is True
    assert result.files == len(files) == result.copied and result.linked == 0


def test_unchanged_files_are_hard_links_to_the_previous_snapshot(project: Path, tmp_path: Path):
    settings = _settings(project)
    first = bk.backup(settings, tmp_path / "bak").snapshot
    with (project / "var/logs/bk.jsonl").open("a") as fh:
        fh.write('{"event": "bar"}\n')

    second = bk.backup(settings, tmp_path / "bak")

    assert second.copied == 1 and second.linked == second.files - 1
    before, after = _files(_manifest(first)), _files(_manifest(second.snapshot))
    for path in after:
        same = (first / path).stat().st_ino == (second.snapshot / path).stat().st_ino
        assert same == (path != "logs/bk.jsonl"), path
    assert after["logs/bk.jsonl"]["sha256"] != before["logs/bk.jsonl"]["sha256"]
    assert (second.snapshot / "logs/bk.jsonl").read_text().endswith('{"event": "bar"}\n')


def test_retention_keeps_the_newest_snapshots(project: Path, tmp_path: Path):
    settings = _settings(project)
    made = [bk.backup(settings, tmp_path / "bak", keep=2).snapshot.name for _ in range(4)]

    assert bk.list_snapshots(tmp_path / "bak") == made[-2:]
    newest = tmp_path / "bak" / made[-1]
    for path, entry in _files(_manifest(newest)).items():  # links outlive the removed snapshots
        assert bk._sha256(newest / path) == entry["sha256"]


def test_a_restore_into_an_empty_folder_reruns_the_backtest_to_the_same_result(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    run = ["backtest", "--config", "configs/bk.toml", "--out", "reports/original"]
    assert runner.invoke(hflite_app, run).exit_code == 0
    done = runner.invoke(cli, ["backup", "--to", str(tmp_path / "bak"), "--config", "configs/bk.toml"])
    assert done.exit_code == 0, done.output
    restored = tmp_path / "restored"

    back = runner.invoke(cli, ["restore", "--from", str(tmp_path / "bak"), "--into", str(restored)])

    assert back.exit_code == 0, back.output
    assert "files verified" in back.stdout
    monkeypatch.chdir(restored)
    (restored / "configs").mkdir()
    shutil.copy(project / "configs/bk.toml", restored / "configs/bk.toml")
    again = runner.invoke(hflite_app, [*run[:-1], "reports/again"])
    assert again.exit_code == 0, again.output
    original = _final_equity(project / "reports/original")
    assert _final_equity(restored / "reports/again") == original
    assert _final_equity(restored / "reports/original") == original
    assert Store(restored / "var/data").verify() == {}
    journal = SqliteJournal(restored / "var/journal/bk.sqlite", create=False)
    assert json.loads(journal.meta("book") or "{}") == {"equity": 100_000.0}
    journal.close()


def test_a_corrupted_snapshot_file_is_named_and_nothing_is_restored(project: Path, tmp_path: Path):
    snap = bk.backup(_settings(project), tmp_path / "bak").snapshot
    damaged = next(p for p in _files(_manifest(snap)) if p.startswith("data/bars/"))
    raw = bytearray((snap / damaged).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (snap / damaged).write_bytes(bytes(raw))
    target = tmp_path / "restored"

    out = runner.invoke(cli, ["restore", "--from", str(tmp_path / "bak"), "--into", str(target)])

    assert out.exit_code == 1
    assert damaged in out.stderr and "corrupted" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not target.exists() or not any(target.rglob("*.*"))


def test_a_target_that_holds_data_is_refused_unless_forced(project: Path, tmp_path: Path):
    bk.backup(_settings(project), tmp_path / "bak")
    (project / "var/logs/bk.jsonl").write_text("changed after the backup\n")

    refused = runner.invoke(cli, ["restore", "--from", str(tmp_path / "bak"), "--config", "configs/bk.toml"])
    assert refused.exit_code == 1 and "--force" in refused.stderr
    assert (project / "var/logs/bk.jsonl").read_text() == "changed after the backup\n"

    forced = runner.invoke(
        cli, ["restore", "--from", str(tmp_path / "bak"), "--config", "configs/bk.toml", "--force"]
    )
    assert forced.exit_code == 0, forced.output
    assert (project / "var/logs/bk.jsonl").read_text() == '{"event": "run.start"}\n'


def test_a_full_disk_leaves_no_partial_snapshot_and_says_so_in_one_line(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    first = bk.backup(_settings(project), tmp_path / "bak").snapshot
    for log in ("a", "b", "c"):  # new files: the next snapshot must copy them
        (project / f"var/logs/{log}.jsonl").write_text(log * 1000)
    real_copy, calls = bk._copy_file, []

    def full_after_one(src: Path, dst: Path) -> tuple[int, str]:
        calls.append(src)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_copy(src, dst)

    monkeypatch.setattr(bk, "_copy_file", full_after_one)

    out = runner.invoke(cli, ["backup", "--to", str(tmp_path / "bak"), "--config", "configs/bk.toml"])

    assert out.exit_code == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left on the device" in lines[0]
    assert bk.list_snapshots(tmp_path / "bak") == [first.name]
    assert not list((tmp_path / "bak").glob(".partial-*"))
    for path, entry in _files(_manifest(first)).items():
        assert bk._sha256(first / path) == entry["sha256"]


def test_a_live_journal_in_wal_mode_is_copied_consistently(project: Path, tmp_path: Path):
    path = project / "var/journal/live.sqlite"
    lock = JournalLock(path)
    lock.acquire("live", registry=path.parent)  # as `hflite run` does: listed in var/journal/runtimes
    journal = SqliteJournal(path, owner=lock)
    journal.db.execute("PRAGMA wal_autocheckpoint=0")  # committed pages stay in the -wal file
    journal.set_meta("book", json.dumps({"equity": 101_234.5}))
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('uncommitted', 'x')")
    try:
        assert Path(f"{path}-wal").stat().st_size > 0
        snap = bk.backup(_settings(project), tmp_path / "bak").snapshot
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        journal.close()

    copy = snap / "journal/live.sqlite"
    assert not Path(f"{copy}-wal").exists() and not (snap / "journal/live.sqlite.lock").exists()
    assert not (snap / "journal/runtimes").exists()
    restored = SqliteJournal(copy, create=False)
    assert json.loads(restored.meta("book") or "{}") == {"equity": 101_234.5}
    assert restored.meta("uncommitted") is None
    assert restored.db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    restored.close()


def test_a_journal_a_runtime_owns_is_never_overwritten(project: Path, tmp_path: Path):
    bk.backup(_settings(project), tmp_path / "bak")
    lock = JournalLock(project / "var/journal/bk.sqlite")
    lock.acquire("bk")
    try:
        out = runner.invoke(
            cli, ["restore", "--from", str(tmp_path / "bak"), "--config", "configs/bk.toml", "--force"]
        )
    finally:
        lock.release()
    assert out.exit_code == 1
    assert "a runtime is using" in out.stderr and f"pid {os.getpid()}" in out.stderr


def _revise(store: Store, factor: float) -> str:
    spy = store.read_bars("SPY", "1d", version=None)
    for c in ("open", "high", "low", "close"):
        spy[c] = spy[c] * factor
    return store.write_bars("SPY", "1d", spy, asset_class="etf", source=f"revision x{factor}").version


def _report(folder: Path, pins: dict[str, str], age: timedelta, now: datetime) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"metrics": {"final_equity": 1.0}}))
    (folder / "config.json").write_text(json.dumps({"data": {"pin": pins}}))
    stamp = (now - age).timestamp()
    for p in (folder / "metrics.json", folder / "config.json", folder):
        os.utime(p, (stamp, stamp))


def test_the_archive_tier_moves_only_what_nothing_reads_and_restore_brings_it_back(
    project: Path, tmp_path: Path
):
    store = Store(project / "var/data")
    v1 = store.version("bars/SPY/1d")
    sample_spy = store.read_bars("SPY", "1d")
    v2 = _revise(store, 1.1)
    v3 = _revise(store, 1.2)
    later = datetime.now(UTC) + timedelta(days=60)  # "60 days from now": both revisions are old then
    _report(project / "reports/old", {"bars/SPY/1d": v1}, timedelta(days=100), later)
    _report(project / "reports/recent", {"bars/SPY/1d": v2[:12]}, timedelta(days=1), later)
    current_files = {p["path"] for p in json.loads(store.manifest_path.read_text())["partitions"].values()}
    settings = _settings(project)

    moved = bk.archive(settings, tmp_path / "bak", 30, now=later)

    assert moved.versions == [f"bars/SPY/1d@{v1[:12]}"]  # v2: a report on the disk pins it
    assert moved.reports == ["old"]
    assert not (project / "reports/old").exists() and (project / "reports/recent").is_dir()
    with pytest.raises(DataNotFoundError):
        store.read_bars("SPY", "1d", version=v1)
    assert store.version("bars/SPY/1d") == v3
    store.read_bars("SPY", "1d", version=v2)
    assert all((store.root / p).is_file() for p in current_files)  # never a current partition
    assert (project / "var/journal/bk.sqlite").is_file()  # never a journal
    assert store.verify() == {}
    listed = json.loads((tmp_path / "bak/archive/manifest.json").read_text())["items"]
    assert sorted(i["kind"] for i in listed) == ["data_version", "report"]
    for item in listed:
        for f in item["files"]:
            assert bk._sha256(tmp_path / "bak/archive" / f["path"]) == f["sha256"]

    out = runner.invoke(
        cli, ["restore", "--from", str(tmp_path / "bak"), "--archive", "-c", "configs/bk.toml"]
    )

    assert out.exit_code == 0, out.output
    pd.testing.assert_frame_equal(store.read_bars("SPY", "1d", version=v1), sample_spy)
    assert json.loads((project / "reports/old/config.json").read_text())["data"]["pin"] == {"bars/SPY/1d": v1}
    assert store.verify() == {}

    again = bk.archive(settings, tmp_path / "bak", 30, now=later)  # old again: moved again, listed once

    assert again.versions == [f"bars/SPY/1d@{v1[:12]}"]
    listed = json.loads((tmp_path / "bak/archive/manifest.json").read_text())["items"]
    assert [i["version"] for i in listed if i["kind"] == "data_version"] == [v1]


def test_a_damaged_archive_file_is_named_and_nothing_comes_back(project: Path, tmp_path: Path):
    later = datetime.now(UTC) + timedelta(days=60)
    _report(project / "reports/old", {}, timedelta(days=100), later)
    bk.archive(_settings(project), tmp_path / "bak", 30, now=later)
    (tmp_path / "bak/archive/reports/old/metrics.json").write_text("{}")

    out = runner.invoke(
        cli, ["restore", "--from", str(tmp_path / "bak"), "--archive", "-c", "configs/bk.toml"]
    )

    assert out.exit_code == 1
    assert "reports/old/metrics.json is corrupted" in out.stderr
    assert not (project / "reports/old").exists()


def test_backup_with_archive_runs_from_the_command_line(project: Path, tmp_path: Path):
    _report(project / "reports/ancient", {}, timedelta(days=400), datetime.now(UTC))

    out = runner.invoke(
        cli,
        ["backup", "--to", str(tmp_path / "bak"), "-c", "configs/bk.toml", "--archive-older-than", "365"],
    )

    assert out.exit_code == 0, out.output
    assert "1 report folder(s)" in out.stdout and "snapshot " in out.stdout
    snap = tmp_path / "bak" / bk.list_snapshots(tmp_path / "bak")[-1]
    assert not any(p.startswith("reports/ancient/") for p in _files(_manifest(snap)))
    assert (tmp_path / "bak/archive/reports/ancient/metrics.json").is_file()


def test_mlflow_ui_prints_the_command_for_the_registry(project: Path):
    out = runner.invoke(cli, ["mlflow-ui", "-c", "configs/bk.toml"])

    assert out.exit_code == 0, out.output
    uri = f"sqlite:///{project / 'var/models/mlflow.db'}"
    assert f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000" in out.stdout.replace("\n", "")
    assert "OOS metrics" in out.stdout


def test_mlflow_ui_without_mlflow_says_how_to_install_it(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ops_cli, "find_spec", lambda name: None)

    out = runner.invoke(cli, ["mlflow-ui"])

    assert out.exit_code == 1
    assert out.stderr.strip() == "error: MLflow is not installed: pip install 'hflite[mlflow]'"


def test_a_second_backup_into_the_same_folder_at_the_same_time_is_refused(project: Path, tmp_path: Path):
    (tmp_path / "bak").mkdir()
    with bk._folder_lock(tmp_path / "bak"):
        out = runner.invoke(cli, ["backup", "--to", str(tmp_path / "bak")])
    assert out.exit_code == 1 and "another backup or restore" in out.stderr
    assert bk.list_snapshots(tmp_path / "bak") == []
    assert runner.invoke(cli, ["backup", "--to", str(tmp_path / "bak")]).exit_code == 0
    assert len(bk.list_snapshots(tmp_path / "bak")) == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_mlflow_ui_run_serves_the_registry_on_loopback(project: Path):
    port = _free_port()
    code = (
        "import typer; from hflite.cli.ops import mlflow_ui; app = typer.Typer(); "
        "app.command()(mlflow_ui); app()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--run", "--port", str(port)],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        answer = ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    answer = resp.read().decode()
                    break
            except OSError:
                time.sleep(1)
        assert answer.strip() == "OK", proc.stdout.read().decode() if proc.poll() is not None else "no answer"
        assert (project / "var/models/mlflow.db").is_file()  # the registry's tracking database
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)  # the UI and its workers: the group this test started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        time.sleep(1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived their parent


def test_a_full_disk_while_archiving_moves_nothing(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    store = Store(project / "var/data")
    v1 = store.version("bars/SPY/1d")
    _revise(store, 1.1)
    _report(project / "reports/old", {}, timedelta(days=400), datetime.now(UTC))

    def full(src: Path, dst: Path) -> tuple[int, str]:
        dst.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(bk, "_copy_file", full)
    args = ["backup", "--to", str(tmp_path / "bak"), "-c", "configs/bk.toml", "--archive-older-than", "0"]

    out = runner.invoke(cli, args)

    assert out.exit_code == 1
    assert out.stderr.count("\n") == 1 and "archive failed: no space left on the device" in out.stderr
    store.read_bars("SPY", "1d", version=v1)  # still on the working disk
    assert (project / "reports/old/metrics.json").is_file()
    assert not [p for p in (tmp_path / "bak/archive").rglob("*") if p.is_file() and p.name != "manifest.json"]
    assert bk.list_snapshots(tmp_path / "bak") == []


def test_a_manifest_path_leaving_the_backup_is_refused(project: Path, tmp_path: Path):
    snap = bk.backup(_settings(project), tmp_path / "bak").snapshot
    manifest = _manifest(snap)
    manifest["files"][0]["path"] = "logs/../../outside.txt"
    (snap / "manifest.json").write_text(json.dumps(manifest))

    out = runner.invoke(cli, ["restore", "--from", str(tmp_path / "bak"), "--into", str(tmp_path / "r")])

    assert out.exit_code == 1 and "is not a path inside the backup" in out.stderr
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "r").exists()
