"""A real Prometheus for tests: started on 127.0.0.1 in a temporary folder, scraping the given targets.

The metrics tests and the lead's end-to-end test (a paper session's ``/metrics``) read values back
through Prometheus's own query API, so what is checked is what an operator's Prometheus would store,
not what the exposition text looks like. Needs Debian's ``prometheus`` binary: absent, the caller is
skipped (failed under ``CI=true``, where ``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

__all__ = ["Prom", "need_binary", "start_prometheus"]

READY_TIMEOUT_S = 30.0


def need_binary(name: str, package: str = "prometheus") -> str:
    """The binary's path; skip when absent (fail under ``CI=true``: ``.ci/run`` installs its Debian
    package)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed (CI installs Debian's {package} package: .ci/run)")
        pytest.skip(f"{name} is not installed (apt-get install {package})")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str, timeout_s: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - 127.0.0.1 only
        return json.loads(resp.read())


def write_config(
    path: Path,
    targets: Sequence[str],
    bearer_token: str | None,
    *,
    rule_files: Sequence[Path] = (),
    metrics_path: str = "/metrics",
    job: str = "hflite",
) -> Path:
    """A Prometheus config scraping ``targets`` every second (token in a 0600 file, never inline)."""
    folder = path.parent
    scrape: dict[str, Any] = {
        "job_name": job,
        "metrics_path": metrics_path,
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "static_configs": [{"targets": list(targets)}],
    }
    if bearer_token is not None:
        token_file = folder / "bearer_token"
        token_file.write_text(bearer_token)
        token_file.chmod(0o600)
        scrape["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [scrape],
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML: no yaml writer needed
    return path


class Prom:
    """A running Prometheus: ``query``, ``wait_for`` and ``stop`` (also a context manager)."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, folder: Path, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.folder = folder
        self.log_path = log_path

    def __enter__(self) -> Prom:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def api(self, path: str, **params: str) -> Any:
        """One GET on the HTTP API; returns ``data`` (raises on an error status)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            body = _get_json(f"{self.url}{path}{query}")
        except urllib.error.HTTPError as exc:  # a bad query answers 400 with a JSON error
            detail = exc.read().decode(errors="replace")
            raise AssertionError(f"Prometheus {path} {params}: HTTP {exc.code}: {detail}") from exc
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result: [{"metric": {labels}, "value": [ts, "text"]}, ...]."""
        data = self.api("/api/v1/query", query=expr)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/targets")["activeTargets"])

    def wait_for(
        self,
        expr: str,
        timeout: float = 30.0,
        until: Callable[[list[dict[str, Any]]], bool] = bool,
    ) -> list[dict[str, Any]]:
        """Poll ``expr`` until ``until(result)`` (default: non-empty); the result, or an assertion
        naming the last result and each target's health (why a scrape failed)."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if until(result):
                return result
            time.sleep(0.2)
        health = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in self.targets()]
        raise AssertionError(f"{expr!r} not satisfied within {timeout}s: last {result}; targets {health}")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate and wait (kill after 10 s); safe to call twice."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _launch(binary: str, config: Path, folder: Path, log_path: Path) -> Prom:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    data = folder / "tsdb"
    data.mkdir(exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - a fixed binary and arguments
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Prom(proc, url, folder, log_path)


def _wait_ready(prom: Prom, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if prom.proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1) as resp:  # noqa: S310
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def start_prometheus(
    tmp_path: Path,
    targets: list[str],
    bearer_token: str | None = None,
    *,
    rule_files: Sequence[Path] = (),
    metrics_path: str = "/metrics",
    job: str = "hflite",
) -> Prom:
    """Start Debian's ``prometheus`` on 127.0.0.1:<free port>, its config and TSDB under
    ``tmp_path/prometheus``, scraping ``targets`` ("127.0.0.1:PORT") every second; returns once
    ``/-/ready`` answers. A port taken between choosing and binding is retried with another."""
    binary = need_binary("prometheus")
    folder = tmp_path / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    config = write_config(
        folder / "prometheus.yml",
        targets,
        bearer_token,
        rule_files=rule_files,
        metrics_path=metrics_path,
        job=job,
    )
    log_path = folder / "prometheus.log"
    for _ in range(3):
        prom = _launch(binary, config, folder, log_path)
        if _wait_ready(prom, READY_TIMEOUT_S):
            return prom
        prom.stop()
    raise RuntimeError(f"prometheus did not become ready; its log:\n{prom.log_tail()}")
