"""deploy/: what can be checked without starting anything. The compose file against the compose spec,
every file it mounts, the image's entrypoint, the systemd units (``systemd-analyze verify``), the
logrotate config (``logrotate -d`` and a real forced rotation), the cron lines, and every ``hflite``
command and option the deploy files use."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from hflite.cli import app
from tests.ops.prometheus import need_binary

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
UNITS = sorted((DEPLOY / "systemd").glob("*.service")) + sorted((DEPLOY / "systemd").glob("*.timer"))
CRON = DEPLOY / "cron/hflite.cron"
LOGROTATE = DEPLOY / "logrotate/hflite"
INSTALL_DIR = "/opt/hflite"
#: Where a Debian-packaged docker-compose keeps the compose specification's JSON schema.
COMPOSE_SCHEMAS = [Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")]
#: The compose specification's keys (compose-spec.io), for the keys this file uses.
SPEC_TOP = {"version", "name", "services", "networks", "volumes", "secrets", "configs"}
SPEC_SERVICE = {
    "build", "command", "container_name", "depends_on", "deploy", "entrypoint", "env_file", "environment",
    "expose", "healthcheck", "image", "init", "labels", "logging", "networks", "ports", "profiles",
    "read_only", "restart", "secrets", "security_opt", "stop_grace_period", "stop_signal", "user",
    "volumes", "working_dir",
}  # fmt: skip
SPEC_HEALTHCHECK = {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}
#: What the lead adds to ``hflite.cli`` for issue 16: the commands and the options of ``run``.
LEAD_REGISTERS = {("backup",), ("restore",), ("mlflow-ui",), ("serve",)}
LEAD_RUN_OPTIONS = {"--api", "--api-host", "--api-port", "--insecure-remote"}

runner = CliRunner()


def _require(tool: str) -> str:
    return need_binary(tool, {"systemd-analyze": "systemd"}.get(tool, tool))


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture
def deploy_copy(tmp_path: Path) -> Path:
    """deploy/ as a user sets it up: the repository around it, a .env from .env.example and the two
    secret files (none of them is in the repository)."""
    root = tmp_path / "repo"
    shutil.copytree(DEPLOY, root / "deploy")
    (root / "src").mkdir()
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copy(DEPLOY / ".env.example", root / "deploy/.env")
    secrets = root / "deploy/secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "hflite_api_token").write_text("t" * 43 + "\n")
    (secrets / "grafana_admin_password").write_text("p" * 22 + "\n")
    return root / "deploy"


# ---------------------------------------------------------------------------------------------------
# docker compose


def _compose_tools() -> Iterator[tuple[str, list[str]]]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        yield "docker compose", [docker, "compose"]
    if shutil.which("docker-compose"):
        yield "docker-compose", [shutil.which("docker-compose") or "docker-compose"]


def test_the_compose_file_follows_the_compose_spec(deploy_copy: Path):
    checked = []
    for name, argv in _compose_tools():
        done = subprocess.run(
            [*argv, "-f", str(deploy_copy / "docker-compose.yml"), "config", "-q"],
            capture_output=True, text=True, cwd=deploy_copy, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, f"{name} config: {done.stdout}{done.stderr}"
        checked.append(name)
    schema = next((p for p in COMPOSE_SCHEMAS if p.is_file()), None)
    if schema is not None:
        import jsonschema_rs

        validator = jsonschema_rs.validator_for(json.loads(schema.read_text()))
        errors = [e.message for e in validator.iter_errors(_compose())]
        assert errors == [], errors
        checked.append(str(schema))
    if not checked:
        if os.environ.get("CI") == "true":
            pytest.fail("no compose validator: CI must install docker-compose (Debian package)")
        pytest.skip("neither docker compose, docker-compose nor the compose spec's schema is here")


def test_a_compose_file_with_an_unknown_key_is_refused(deploy_copy: Path):
    """The validators above do reject a wrong file (so their green means something)."""
    bad = _compose()
    bad["services"]["hflite"]["restart_policy"] = "always"  # a swarm key, not a service key
    (deploy_copy / "docker-compose.yml").write_text(yaml.safe_dump(bad))
    tools = list(_compose_tools())
    if not tools:
        if os.environ.get("CI") == "true":
            pytest.fail("no compose validator: CI must install docker-compose (Debian package)")
        pytest.skip("neither docker compose nor docker-compose is here")
    for name, argv in tools:
        done = subprocess.run(
            [*argv, "-f", str(deploy_copy / "docker-compose.yml"), "config", "-q"],
            capture_output=True, text=True, cwd=deploy_copy, timeout=120,
        )  # fmt: skip
        assert done.returncode != 0, name
        assert "restart_policy" in done.stdout + done.stderr


def test_the_compose_file_uses_only_the_specs_keys():
    compose = _compose()
    assert set(compose) <= SPEC_TOP
    for name, service in compose["services"].items():
        assert set(service) <= SPEC_SERVICE, (name, set(service) - SPEC_SERVICE)
        assert set(service.get("healthcheck", {})) <= SPEC_HEALTHCHECK


def test_the_compose_stack_runs_the_api_inside_and_publishes_only_on_loopback():
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"hflite", "prometheus", "grafana"}
    command = services["hflite"]["command"]
    assert command[:3] == ["run", "--config", "/app/configs/paper.toml"]
    assert command[command.index("--api-host") + 1] == "0.0.0.0"
    assert "--api" in command and "--insecure-remote" in command
    assert command[command.index("--api-port") + 1] == "8765"
    for service in services.values():
        assert service["restart"] == "unless-stopped"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port
    health = services["hflite"]["healthcheck"]
    assert "http://127.0.0.1:8765/health" in " ".join(health["test"])
    assert {s for s in compose["secrets"]} == {"hflite_api_token", "grafana_admin_password"}
    assert "hflite_api_token" in services["hflite"]["secrets"]
    assert "hflite_api_token" in services["prometheus"]["secrets"]
    prometheus = (DEPLOY / "prometheus/prometheus.yml").read_text()
    assert "/run/secrets/hflite_api_token" in prometheus and "hflite:8765" in prometheus


def _bind_sources(compose: dict) -> list[str]:
    out = []
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                out.append(source)
    return out


def test_every_file_the_compose_file_mounts_is_in_the_repository():
    compose = _compose()
    binds = _bind_sources(compose)
    assert binds, "the compose file mounts the Prometheus and Grafana files"
    for source in binds:
        assert (DEPLOY / source).exists(), source
    dashboards = DEPLOY / "grafana/dashboards"
    assert list(dashboards.glob("*.json"))
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/hflite.yml").read_text())
    mounted = {v.split(":")[1] for v in compose["services"]["grafana"]["volumes"] if v.startswith("./")}
    assert provider["providers"][0]["options"]["path"] in mounted
    rules = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())["rule_files"]
    assert {f"/etc/prometheus/{r}" for r in rules} <= {
        v.split(":")[1] for v in compose["services"]["prometheus"]["volumes"] if v.startswith("./")
    }
    build = compose["services"]["hflite"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    # what the user makes (never in the repository): .env from .env.example, the secret files
    assert compose["services"]["hflite"]["env_file"] == [".env"] and (DEPLOY / ".env.example").is_file()
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")


def test_env_example_names_every_variable_the_stack_reads_with_empty_values():
    lines = [ln for ln in (DEPLOY / ".env.example").read_text().splitlines() if ln and not ln.startswith("#")]
    pairs = dict(ln.split("=", 1) for ln in lines)
    assert all(value == "" for value in pairs.values())
    interpolated = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE.read_text()))
    assert interpolated <= set(pairs), interpolated - set(pairs)
    from hflite.config import ApiConfig, TelegramConfig
    from hflite.redact import SECRET_ENV_VARS

    assert {ApiConfig().token_env, TelegramConfig().token_env, "HFLITE_BROKER_KEY_ID"} <= set(pairs)
    providers = {v for v in SECRET_ENV_VARS if v.endswith(("_KEY", "_TOKEN")) and not v.startswith("HFLITE")}
    assert providers - {"APCA_API_KEY_ID"} <= set(pairs)


# ---------------------------------------------------------------------------------------------------
# the image


def test_the_dockerfile_builds_a_non_root_hflite_image_from_wheels():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[12]-slim\b", text, re.M)
    assert "--only-binary=ta-lib" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["hflite-entrypoint"\]', text, re.M)
    volumes = json.loads(re.search(r"^VOLUME (\[.*\])", text, re.M).group(1))  # type: ignore[union-attr]
    assert {"/app/var", "/app/var/data", "/app/reports"} <= set(volumes)


def test_ta_lib_is_installed_from_a_manylinux_wheel_so_the_image_needs_no_c_build():
    wheel = importlib.metadata.distribution("ta-lib").read_text("WHEEL") or ""
    assert any("manylinux" in ln for ln in wheel.splitlines() if ln.startswith("Tag:")), wheel


def test_the_entrypoint_turns_secret_files_into_variables(tmp_path: Path):
    text = (DEPLOY / "Dockerfile").read_text()
    script = re.search(r"<<'SH' /usr/local/bin/hflite-entrypoint\n(.*?)\nSH\n", text, re.S).group(1)  # type: ignore[union-attr]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "hflite_api_token").write_text("from-the-secret-file\n")
    (secrets / "hflite_telegram_token").write_text("telegram-secret\n")
    (secrets / "bad name!").write_text("ignored")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "hflite"  # stands in for the installed console script: prints what it was given
    fake.write_text(
        '#!/bin/sh\necho "args=$*"\necho "token=$HFLITE_API_TOKEN"\necho "tg=$HFLITE_TELEGRAM_TOKEN"\n'
    )
    fake.chmod(0o755)
    entry = tmp_path / "entrypoint"
    entry.write_text(script.replace("/run/secrets", str(secrets)))
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HFLITE_TELEGRAM_TOKEN": "already-set"}

    done = subprocess.run(["/bin/sh", str(entry), "run", "--api"], capture_output=True, text=True, env=env)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["args=run --api", "token=from-the-secret-file", "tg=already-set"]
    empty = subprocess.run(
        ["/bin/sh", str(entry), "status"], capture_output=True, text=True, env={**env, "HFLITE_API_TOKEN": ""}
    )
    assert "token=from-the-secret-file" in empty.stdout  # an empty variable counts as unset


# ---------------------------------------------------------------------------------------------------
# systemd


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = {}
            continue
        key, _, value = line.partition("=")
        sections[current].setdefault(key, []).append(value)
    return sections


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path):
    tool = _require("systemd-analyze")
    hflite_bin = REPO / ".venv/bin/hflite"
    binary = hflite_bin if hflite_bin.is_file() else Path(sys.executable)
    for unit in UNITS:  # ExecStart must name an existing binary: the repo's own hflite
        text = unit.read_text().replace(f"{INSTALL_DIR}/.venv/bin/hflite", str(binary))
        (tmp_path / unit.name).write_text(text)

    done = subprocess.run(
        [tool, "verify", *(str(tmp_path / u.name) for u in UNITS)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )  # fmt: skip

    ours = [ln for ln in (done.stdout + done.stderr).splitlines() if "hflite" in ln]
    assert done.returncode == 0 and ours == [], done.stdout + done.stderr


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path):
    """verify exits 0 on a bad value (it only warns), so the test above also requires no warning."""
    tool = _require("systemd-analyze")
    unit = tmp_path / "hflite-run.service"
    text = (DEPLOY / "systemd/hflite-run.service").read_text().replace("WatchdogSec=30", "WatchdogSec=thirty")
    unit.write_text(text.replace(f"{INSTALL_DIR}/.venv/bin/hflite", sys.executable))
    done = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert "WatchdogSec" in done.stdout + done.stderr or "sec value" in done.stdout + done.stderr


def test_the_run_unit_is_a_watched_hardened_notify_service():
    service = _unit(DEPLOY / "systemd/hflite-run.service")["Service"]
    expect = {"Type": "notify", "WatchdogSec": "30", "Restart": "on-failure", "RestartSec": "10",
              "NotifyAccess": "main", "NoNewPrivileges": "yes", "ProtectSystem": "strict"}  # fmt: skip
    assert {k: service[k][-1] for k in expect} == expect
    assert service["EnvironmentFile"] and service["WorkingDirectory"] == [INSTALL_DIR]
    writable = " ".join(service["ReadWritePaths"]).split()
    assert {f"{INSTALL_DIR}/var", f"{INSTALL_DIR}/reports"} <= set(writable)
    argv = shlex.split(service["ExecStart"][0])
    assert argv[0] == f"{INSTALL_DIR}/.venv/bin/hflite" and argv[1] == "run" and "--api" in argv


def test_the_timers_fire_after_the_us_close_and_nightly():
    tool = shutil.which("systemd-analyze")
    update = _unit(DEPLOY / "systemd/hflite-data-update.timer")["Timer"]
    report = _unit(DEPLOY / "systemd/hflite-report.timer")["Timer"]
    assert update["OnCalendar"] == ["Mon..Fri *-*-* 16:30:00 America/New_York"]
    assert update["Unit"] == ["hflite-data-update.service"] and report["Unit"] == ["hflite-report.service"]
    if tool is None:
        return
    for spec in (update["OnCalendar"][0], report["OnCalendar"][0]):
        done = subprocess.run([tool, "calendar", "--iterations=5", spec], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("Iter.") >= 4 or "Next elapse" in done.stdout
    done = subprocess.run([tool, "calendar", "--iterations=10", update["OnCalendar"][0]], capture_output=True,
                          text=True, env={**os.environ, "TZ": "America/New_York"})  # fmt: skip
    days = re.findall(r"\b(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d{4}-\d\d-\d\d 16:30:00", done.stdout)
    assert days and not {"Sat", "Sun"} & set(days), done.stdout


# ---------------------------------------------------------------------------------------------------
# logrotate and cron


def _logrotate_copy(tmp_path: Path) -> Path:
    import grp
    import pwd

    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    text = (
        LOGROTATE.read_text()
        .replace(INSTALL_DIR, str(tmp_path))
        .replace("su hflite hflite", f"su {user} {group}")
    )
    conf = tmp_path / "logrotate.conf"
    conf.write_text(text)
    (tmp_path / "var/logs").mkdir(parents=True)
    (tmp_path / "reports/logs").mkdir(parents=True)
    (tmp_path / "var/logs/paper.jsonl").write_text('{"event": "run.start"}\n' * 50)
    (tmp_path / "var/logs/paper.jsonl.1").write_text("hflite's own rotated file\n")
    (tmp_path / "reports/logs/data-update.log").write_text("updated\n")
    return conf


def test_the_logrotate_config_passes_logrotate_debug(tmp_path: Path):
    tool = _require("logrotate")
    conf = _logrotate_copy(tmp_path)
    done = subprocess.run(
        [tool, "-d", "-s", str(tmp_path / "state"), str(conf)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "error" not in (done.stdout + done.stderr).lower()


def test_logrotate_copies_truncates_compresses_and_leaves_hflites_own_files(tmp_path: Path):
    tool = _require("logrotate")
    conf = _logrotate_copy(tmp_path)
    rules = LOGROTATE.read_text()
    for word in ("copytruncate", "compress", "rotate 14", "daily", "missingok"):
        assert re.search(rf"^\s*{word}\s*$", rules, re.M), word

    done = subprocess.run(
        [tool, "-f", "-s", str(tmp_path / "state"), str(conf)], capture_output=True, text=True
    )

    assert done.returncode == 0, done.stdout + done.stderr
    logs = tmp_path / "var/logs"
    assert (logs / "paper.jsonl").stat().st_size == 0  # truncated in place: the writer's file stays
    rotated = list(logs.glob("paper.jsonl-*.gz"))
    assert len(rotated) == 1
    assert (logs / "paper.jsonl.1").read_text() == "hflite's own rotated file\n"
    assert list((tmp_path / "reports/logs").glob("data-update.log-*.gz"))


def _cron_jobs() -> list[tuple[list[str], str]]:
    jobs = []
    for line in CRON.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        fields = line.split(None, 5)
        jobs.append((fields[:5], fields[5] if len(fields) > 5 else ""))
    return jobs


_CRON_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def _cron_field_ok(field: str, low: int, high: int) -> bool:
    for part in field.split(","):
        base, _, step = part.partition("/")
        if step and not step.isdigit():
            return False
        if base == "*":
            continue
        bounds = base.split("-")
        if not all(b.isdigit() and low <= int(b) <= high for b in bounds) or len(bounds) > 2:
            return False
    return True


def test_the_cron_lines_have_five_time_fields_and_a_command():
    jobs = _cron_jobs()
    assert len(jobs) == 3
    for fields, command in jobs:
        assert len(fields) == 5 and command, (fields, command)
        assert all(_cron_field_ok(f, lo, hi) for f, (lo, hi) in zip(fields, _CRON_RANGES, strict=True)), (
            fields
        )
        assert "%" not in command.replace("\\%", ""), "an unescaped % ends a cron command"
    assert jobs[0][0] == ["30", "16", "*", "*", "1-5"] and "data update" in jobs[0][1]
    assert not _cron_field_ok("61", 0, 59) and not _cron_field_ok("1-x", 0, 23)


# ---------------------------------------------------------------------------------------------------
# every hflite command the deploy files use exists


_STOP = re.compile(r"[|;&>`\"')]")


def _hflite_invocations(text: str) -> Iterator[list[str]]:
    """The argument lists after each `hflite` word in shell text (up to a shell operator or quote)."""
    text = re.sub(r"(?m)(^|\s)#.*$", "", text)  # shell comments
    for match in re.finditer(r"(?:^|[\s/`'\"(])hflite[ \t]+(?!hflite\b)([a-z][a-z-]*(?=\s|$)[^\n]*)", text):
        rest = _STOP.split(match.group(1), maxsplit=1)[0]
        words = rest.split()
        if words:
            yield words


def _readme_shell(text: str) -> str:
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return "\n".join([*blocks, *spans])


def _deploy_invocations() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for unit in UNITS:
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                found += [(unit.name, w) for w in _hflite_invocations(line.replace("%%", "%"))]
    for _fields, command in _cron_jobs():
        found += [(CRON.name, w) for w in _hflite_invocations(command)]
    found.append((COMPOSE.name, [str(a) for a in _compose()["services"]["hflite"]["command"]]))
    for name in ("README.md", "Dockerfile"):
        text = (DEPLOY / name).read_text()
        shell = _readme_shell(text) if name.endswith(".md") else text
        found += [(name, w) for w in _hflite_invocations(shell)]
    return found


def _resolve(words: list[str]) -> tuple[tuple[str, ...], Any, list[str]]:
    """(command path, the (click) command or None when missing, the --options used)."""
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    for word in words:
        if not hasattr(command, "commands") or word.startswith("-"):
            break
        sub = command.commands.get(word)
        if sub is None:
            return (*path, word), None, []
        command, path = sub, [*path, word]
    flags = [w.split("=", 1)[0] for w in words if w.startswith("--")]
    return tuple(path), command, flags


def _missing() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"lead": [], "other": []}
    for where, words in _deploy_invocations():
        path, command, flags = _resolve(words)
        if command is None:
            out["lead" if path[:1] in LEAD_REGISTERS else "other"].append(f"{where}: hflite {' '.join(path)}")
            continue
        known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
        for flag in flags:
            if flag not in known:
                lead = path == ("run",) and flag in LEAD_RUN_OPTIONS
                out["lead" if lead else "other"].append(f"{where}: hflite {' '.join(path)} {flag}")
    return out


def test_the_deploy_files_name_hflite_commands_everywhere_they_should():
    used = {_resolve(w)[0][:1] for _where, w in _deploy_invocations()}
    assert {("run",), ("data",), ("drift",), ("backup",), ("restore",)} <= used


def test_every_hflite_command_and_option_in_the_deploy_files_exists():
    missing = _missing()["other"]
    assert missing == []
    paths = {_resolve(words)[0] for _where, words in _deploy_invocations() if _resolve(words)[1] is not None}
    for path in sorted(paths):
        assert runner.invoke(app, [*path, "--help"]).exit_code == 0, path


def test_the_commands_the_lead_registers_exist():
    missing = _missing()["lead"]
    if missing:
        pytest.xfail(f"lead registers: {'; '.join(sorted(set(missing)))}")
    for command in ("backup", "restore", "mlflow-ui", "serve"):
        assert runner.invoke(app, [command, "--help"]).exit_code == 0
