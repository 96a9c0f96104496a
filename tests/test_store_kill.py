"""A writer killed at random moments never leaves a torn or inconsistent partition behind.

A subprocess rewrites one archived partition (hot and archive files, then the manifest) in a loop and
is SIGKILLed after a random 5-200 ms, 15 times. After each kill a fresh Store must verify clean and
read exactly the last acknowledged version or the one that was being written, never a mix or an error.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hflite.data.sample import read_sample_file, sample_catalog
from hflite.data.store import Store, content_hash

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

REPO = Path(__file__).resolve().parents[1]
KILLS = 15
KEEP = 2
NOW = pd.Timestamp("2025-01-01", tz="UTC")

# Rewrites SPY with volume + i for i = first, first + 1, ... and acknowledges each committed write.
WRITER = f"""
import sys
from hflite.data.sample import read_sample_file, sample_catalog
from hflite.data.store import Store

root, archive_root = sys.argv[1], sys.argv[2]
base = read_sample_file(next(f for f in sample_catalog() if f.key == "bars/SPY/1d"))
store = Store(root, archive_root=archive_root, keep_versions={KEEP})
print("ready", flush=True)
i = int(sys.stdin.readline())  # the first index to write, sent when the round starts
while True:
    store.write_bars("SPY", "1d", base.assign(volume=base["volume"] + i))
    print(i, flush=True)
    i += 1
"""


def _base() -> pd.DataFrame:
    return read_sample_file(next(f for f in sample_catalog() if f.key == "bars/SPY/1d"))


def _readline(proc: subprocess.Popen[str], timeout_s: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    assert ready, "writer did not start in time"
    return proc.stdout.readline().strip()


def _spawn(root: Path, archive_root: Path) -> subprocess.Popen[str]:
    """A writer that loads its libraries and waits for its first index on stdin."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(archive_root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _one_round(proc: subprocess.Popen[str], first: int, delay_s: float) -> list[int]:
    """Let a started writer write from index ``first``, kill it after ``delay_s``; return its acks."""
    try:
        assert _readline(proc, 30.0) == "ready"
        assert proc.stdin is not None
        proc.stdin.write(f"{first}\n")
        proc.stdin.flush()
        time.sleep(delay_s)
    finally:
        proc.kill()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return [int(line) for line in out.split()]


def _written_index(frame: pd.DataFrame, base: pd.DataFrame) -> int:
    """Which write produced ``frame`` (every row must come from the same one)."""
    offsets = np.unique(frame["volume"].to_numpy() - base["volume"].to_numpy())
    assert len(offsets) == 1, f"rows from several versions: {offsets[:5]}"
    pd.testing.assert_frame_equal(frame.drop(columns="volume"), base.drop(columns="volume"))
    return int(offsets[0])


def test_a_writer_killed_at_random_moments_leaves_old_or_new_data(tmp_path):
    root, archive_root = tmp_path / "hot", tmp_path / "cold"
    base = _base()
    store = Store(root, archive_root=archive_root, keep_versions=KEEP)
    t0 = time.perf_counter()
    store.write_bars("SPY", "1d", base)
    one_write_s = time.perf_counter() - t0
    store.archive("3y", now=NOW)  # every write now rewrites a hot and an archive file
    # Kill moments span a few writes: 0.2 s on a quiet machine, longer when the other test worker
    # keeps the cores busy (so some rounds always see committed writes).
    longest = max(0.2, 6 * one_write_s)
    rng = random.Random(20240611)
    current, writes_seen, started = 0, 0, time.perf_counter()
    waiting: subprocess.Popen[str] | None = _spawn(root, archive_root)
    try:
        for n in range(KILLS):
            proc, waiting = waiting, (_spawn(root, archive_root) if n + 1 < KILLS else None)  # preload
            assert proc is not None
            acks = _one_round(proc, current + 1, rng.uniform(0.005, longest))

            fresh = Store(root)
            assert fresh.verify() == {}
            got = fresh.read_bars("SPY")
            index = _written_index(got, base)
            last_acked = acks[-1] if acks else current
            assert index in (last_acked, last_acked + 1), (index, last_acked)  # old or new content
            assert fresh.version("bars/SPY/1d") == content_hash(got)
            part = fresh.partitions()[0]
            assert (part.rows, part.archive_rows) == (6598, 5536)
            writes_seen += len(acks)
            current = index
    finally:
        if waiting is not None:
            waiting.kill()
            waiting.communicate(timeout=30)

    assert time.perf_counter() - started < 60 + KILLS * longest
    assert writes_seen > 0
    final = store.write_bars("SPY", "1d", base.assign(volume=base["volume"] + current + 1))
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []  # temp files of killed writers are removed by the next write
    files = {p.name for p in (root / final.path).parent.iterdir()}
    assert len(files) <= KEEP + 1  # and so are files no kept version refers to
    assert store.verify() == {}
