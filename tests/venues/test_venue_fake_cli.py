"""``hflite venue fake KIND`` serves each broker's local fake from the command line, and ``hflite venue
check`` against it connects through that broker's real adapter (as a user would try a venue without
keys): one subprocess per kind, on a free port, stopped at the end."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hflite.cli import app
from tests.venues.contract import register_test_secret

REPO = Path(__file__).resolve().parents[2]
KEY_ID, SECRET, ACCOUNT = "cli-fake-KEY-8841", "cli-fake-SECRET-8842", "DU7654321"
register_test_secret(KEY_ID, SECRET)
#: kind -> (the example config, the account variable's value)
CASES = {
    "fakebroker": ("paper.toml", ACCOUNT),
    "alpaca": ("alpaca_paper.toml", ACCOUNT),
    "ccxt": ("ccxt_testnet.toml", ACCOUNT),
    "oanda": ("oanda_practice.toml", "101-001-7654321-001"),
    "ib": ("ib_paper.toml", ACCOUNT),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp_path: Path, account: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HFLITE_")}
    secret_vars = ("HFLITE_BROKER_SECRET", "HFLITE_OANDA_TOKEN")
    env.update(
        {"HFLITE_BROKER_KEY_ID": KEY_ID, "HFLITE_BROKER_ACCOUNT": account, "HFLITE_OANDA_ACCOUNT": account}
    )
    env.update(dict.fromkeys(secret_vars, SECRET))
    return env


@pytest.mark.parametrize("kind", list(CASES))
def test_venue_fake_serves_each_broker_and_venue_check_connects_to_it(
    kind, sample_store, tmp_path, monkeypatch
):
    config_name, account = CASES[kind]
    config = REPO / "configs" / config_name
    port = _free_port()
    env = _env(tmp_path, account)
    sets = ["--set", f"data.dir={sample_store.root}"]
    code = "import sys; from hflite.cli import app; sys.argv[0] = 'hflite'; app()"
    cmd = [
        sys.executable,
        "-c",
        code,
        "venue",
        "fake",
        kind,
        "--config",
        str(config),
        "--port",
        str(port),
        *sets,
    ]
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        line = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if "listening on" in line or proc.poll() is not None:
                break
        assert "listening on" in line, f"{kind}: {line}{proc.stdout.read() if proc.stdout else ''}"
        url = re.search(r"(https?|tcp)://127\.0\.0\.1:\d+", line)
        assert url is not None and url.group(0).endswith(f":{port}")
        for k, v in env.items():
            if k.startswith("HFLITE_"):
                monkeypatch.setenv(k, v)
        monkeypatch.chdir(tmp_path)
        args = ["venue", "check", "--config", str(config), *sets, "--set", f"venue.url={url.group(0)}"]
        args += ["--set", f"venue.kind={kind}"]
        result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "OK" in result.output and "latency" in result.output
        assert KEY_ID not in result.output and SECRET not in result.output
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
