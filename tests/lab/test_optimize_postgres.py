"""``hflite optimize --storage postgresql+psycopg://...``: a real PostgreSQL server (started here, on
127.0.0.1 and a free port, in a temporary folder) shared by two worker processes records every trial once,
and the grid they run together is the grid one process runs.

Needs PostgreSQL's server binaries (Debian's ``postgresql`` package: /usr/lib/postgresql/<version>/bin)
and psycopg (the ``postgres`` extra): skipped with the reason when absent, failed under ``CI=true``, where
``.ci/run`` installs them. initdb refuses to run as root: as root the server runs as the ``postgres`` user
(or ``nobody``) through ``runuser``.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hflite.lab.optimize import StorageError, grid_points, open_storage, run_study
from hflite.lab.space import parse_space
from tests.conftest import make_settings

pytestmark = pytest.mark.slow


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI installs Debian's postgresql package and the postgres extra: .ci/run)")
    pytest.skip(why)


def _bin_dir() -> Path | None:
    """PostgreSQL's server binaries: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))
    for d in reversed(dirs):
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server with an empty database ``studies``: its URL (trust, no password)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'hflite[postgres]')")
    prefix: list[str] = []
    home = tempfile.mkdtemp(prefix="hflite-pg-")  # short: the socket path must stay under 107 bytes
    if os.geteuid() == 0:  # initdb and postgres refuse root: run them as an ordinary user
        runuser = shutil.which("runuser")
        if runuser is None:
            _unavailable("running as root without runuser: cannot start PostgreSQL as another user")
        user = next((u for u in ("postgres", "nobody") if _exists(u)), None)
        if user is None:
            _unavailable("running as root and neither a postgres nor a nobody user exists")
        os.chown(home, pwd.getpwnam(user).pw_uid, -1)
        prefix = [runuser, "-u", user, "--"]
    port = _free_port()
    data = Path(home) / "data"
    run = lambda *args: subprocess.run(  # noqa: E731
        [*prefix, *map(str, args)], cwd="/", capture_output=True, text=True, timeout=60, check=False
    )
    init = run(bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "hflite", "-E", "UTF8", "--no-sync")
    if init.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
    options = f"-k {home} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = run(
        bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", Path(home) / "log", "-w", "-t", "30", "start"
    )
    try:
        if start.returncode != 0:
            log = (Path(home) / "log").read_text() if (Path(home) / "log").exists() else ""
            pytest.fail(f"pg_ctl start failed: {start.stderr.strip()} {log[-500:]}")
        with psycopg.connect(
            f"host=127.0.0.1 port={port} user=hflite dbname=postgres", autocommit=True
        ) as con:
            con.execute("CREATE DATABASE studies")
        yield f"postgresql+psycopg://hflite@127.0.0.1:{port}/studies"
    finally:
        run(bin_dir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _settings(store):
    return make_settings(
        store,
        run={"start": "2015-01-02", "end": "2018-12-31"},
        strategy={"name": "trend", "stop_atr": 0},
        risk={"profile": "minimal"},
    )


def test_two_worker_processes_share_one_postgres_study_without_losing_or_repeating_a_trial(
    postgres_url, sample_store
):
    s = _settings(sample_store)
    params = parse_space(["fast=5,10,20", "slow=50,100,150", "ma=sma,ema"])  # 18 points
    kw = dict(n_trials=18, store=sample_store, sampler="grid", seed=2)
    two = run_study(s, params, storage=postgres_url, study_name="grid-two", workers=2, **kw)
    one = run_study(s, params, storage=postgres_url, study_name="grid-one", workers=1, **kw)
    trials = optuna.load_study(
        study_name="grid-two", storage=postgres_url
    ).trials  # read back from the server
    assert sorted(t.number for t in trials) == list(range(18))
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    points = lambda ts: sorted(json.dumps(t.params, sort_keys=True) for t in ts)  # noqa: E731
    assert points(trials) == points(one.study.trials)
    assert points(trials) == sorted(json.dumps(p, sort_keys=True) for p in grid_points(params))
    by_point = lambda ts: {json.dumps(t.params, sort_keys=True): t.values[0] for t in ts}  # noqa: E731
    assert by_point(trials) == by_point(one.study.trials)  # the same backtests, whoever ran them
    assert two.best_params == one.best_params and two.n_total == 18


def test_tpe_workers_on_postgres_run_exactly_the_trials_asked_and_resume_counts_on(
    postgres_url, sample_store
):
    s = _settings(sample_store)
    params = parse_space(["fast=5..30", "slow=40..150"])
    first = run_study(
        s, params, n_trials=10, storage=postgres_url, study_name="tpe", workers=2, store=sample_store
    )
    assert first.n_complete + first.n_pruned == 10
    again = run_study(s, params, n_trials=3, storage=postgres_url, study_name="tpe", store=sample_store)
    assert again.n_before == 10
    numbers = [t.number for t in again.study.trials]
    assert sorted(numbers) == list(range(13))
    assert again.study.user_attrs["space"][1]["key"] == "strategy.slow"


def test_a_missing_database_is_one_line_naming_it(postgres_url):
    url = postgres_url.rsplit("/", 1)[0] + "/nope"
    with pytest.raises(StorageError, match='cannot open it: .*database "nope" does not exist'):
        open_storage(url)
