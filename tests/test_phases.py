"""Phases, venues, the runtime section, the live gate and the run's log file (docs/phases.md)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from hflite import logs, redact
from hflite.config import (
    DEFAULT_VENUE_KEYS,
    PHASES,
    ConfigError,
    Settings,
    VenueConfig,
    load_settings,
    redacted,
    venue_keys,
)
from hflite.execution.live_guard import LiveTradingRefused, check_live, confirmation_text
from tests.conftest import REPO


def settings(**sections: dict[str, Any]) -> Settings:
    """A small valid run with ``sections`` merged over it."""
    base: dict[str, Any] = {
        "run": {"name": "t-run", "symbols": ["BTC-USD"], "start": "2023-01-02", "end": "2024-01-02"},
        "strategy": {"name": "trend"},
        "llm": {"mode": "off"},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return load_settings(None, base)


def error_of(**sections: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        settings(**sections)
    return str(info.value)


@pytest.fixture
def no_broker_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No venue keys in the environment, and a working directory without a .env."""
    for name in ("HFLITE_BROKER_KEY_ID", "HFLITE_BROKER_SECRET", "HFLITE_CONFIRM_LIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------------------------------------------
# [phase]


def test_without_a_phase_no_phase_limits_apply():
    s = settings(run={"symbols": ["SPY", "QQQ", "TLT"], "initial_cash": 1e6})
    assert s.phase is None and s.phase_limits() is None
    assert (s.risk.risk_pct, s.risk.max_drawdown_pct, s.risk.max_open_positions) == (0.5, 15.0, 10)


@pytest.mark.parametrize(
    ("phase", "cash", "risk_pct", "max_dd", "positions", "reduce_at"),
    [
        ("sandbox", 100_000, 0.5, 5.0, 2, 2.5),
        ("small", 500, 1.0, 10.0, 10, 5.0),
        ("grow", 5_000, 0.75, 15.0, 10, 10.0),
        ("pro", 1e6, 0.5, 20.0, 10, 10.0),
    ],
)
def test_each_phase_sets_its_limits_as_the_risk_defaults(phase, cash, risk_pct, max_dd, positions, reduce_at):
    s = settings(phase={"name": phase}, run={"initial_cash": cash})
    assert s.phase_limits() is PHASES[phase]
    assert s.risk.risk_pct == risk_pct
    assert s.risk.max_drawdown_pct == max_dd
    assert s.risk.max_open_positions == positions
    assert s.risk.drawdown_reduce_pct == reduce_at


def test_the_phase_table_matches_the_plan():
    assert [
        (p.max_assets, p.max_cash_usd, p.max_risk_pct, p.portfolio_risk_pct) for p in PHASES.values()
    ] == [
        (2, None, 0.5, 5.0),
        (10, 500.0, 1.0, 10.0),
        (25, 5000.0, 0.75, 15.0),
        (None, None, 0.5, 20.0),
    ]
    assert [p.paper_only for p in PHASES.values()] == [True, False, False, False]
    assert dict(PHASES["grow"].rows())["assets"] == "15-25"
    assert dict(PHASES["pro"].rows())["assets"] == "30+"


def test_explicit_settings_may_tighten_a_phase():
    s = settings(
        phase={"name": "grow"},
        run={"initial_cash": 2_000},
        risk={"risk_pct": 0.25, "max_drawdown_pct": 8, "drawdown_reduce_pct": 4, "max_open_positions": 3},
    )
    assert (s.risk.risk_pct, s.risk.max_drawdown_pct, s.risk.max_open_positions) == (0.25, 8.0, 3)


def test_an_explicit_value_equal_to_the_limit_is_accepted():
    s = settings(
        phase={"name": "sandbox"},
        risk={"risk_pct": 0.5, "max_drawdown_pct": 5, "drawdown_reduce_pct": 2, "max_open_positions": 2},
    )
    assert s.risk.risk_pct == 0.5


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {"phase": {"name": "grow"}, "run": {"initial_cash": 1000}, "risk": {"risk_pct": 0.8}},
            "config error: risk.risk_pct: 0.8 is looser than phase grow allows (at most 0.75)",
        ),
        (
            {"phase": {"name": "small"}, "run": {"initial_cash": 300}, "risk": {"max_drawdown_pct": 12}},
            "config error: risk.max_drawdown_pct: 12 is looser than phase small allows (at most 10, its "
            "portfolio risk)",
        ),
        (
            {"phase": {"name": "sandbox"}, "risk": {"max_open_positions": 0}},
            "config error: risk.max_open_positions: 0 (off) is looser than phase sandbox allows (at most 2)",
        ),
        (
            {"phase": {"name": "small"}, "run": {"initial_cash": 300}, "risk": {"max_open_positions": 11}},
            "config error: risk.max_open_positions: 11 is looser than phase small allows (at most 10)",
        ),
        (
            {"phase": {"name": "sandbox"}, "run": {"symbols": ["BTC-USD", "EURUSD", "SPY"]}},
            "config error: run.symbols: 3 symbols is more than phase sandbox allows (at most 2)",
        ),
        (
            {"phase": {"name": "small"}, "run": {"initial_cash": 600}},
            "config error: run.initial_cash: 600 is more than phase small allows (at most 500)",
        ),
        (
            {"phase": {"name": "sandbox"}, "risk": {"drawdown_reduce_pct": 6}},
            "config error: risk.drawdown_reduce_pct: 6 must be below max_drawdown_pct (5, phase sandbox's "
            "portfolio risk)",
        ),
        (
            {"phase": {"name": "medium"}},
            "config error: phase.name: Input should be 'sandbox', 'small', 'grow' or 'pro' (got 'medium')",
        ),
    ],
)
def test_a_looser_explicit_value_is_refused_in_one_line(sections, message):
    assert error_of(**sections) == message


def test_a_looser_value_from_set_is_refused_too():
    base = {
        "run": {"symbols": ["BTC-USD"], "start": "2023-01-02", "end": "2024-01-02"},
        "strategy": {"name": "trend"},
        "phase": {"name": "pro"},
    }
    with pytest.raises(ConfigError, match=r"^config error: risk.risk_pct: 0.75 is looser than phase pro"):
        load_settings(None, base | {"risk": {"risk_pct": 0.75}})


def test_a_phased_run_reloads_from_its_recorded_config():
    s = settings(phase={"name": "sandbox"})
    assert load_settings(None, redacted(s)) == s


# ---------------------------------------------------------------------------------------------------
# [venue]


def test_the_venue_defaults_to_paper_and_never_live():
    s = settings()
    assert (s.venue.kind, s.venue.live, s.venue.url, s.venue.endpoint) == ("paper", False, None, "")
    assert (s.venue.timeout_s, s.venue.max_retries, s.venue.rate_per_min, s.venue.max_clock_skew_s) == (
        5.0,
        5,
        200,
        2.0,
    )


def test_the_paper_venue_has_no_live_endpoint():
    assert error_of(venue={"live": True}) == (
        "config error: venue.live: the paper venue has no live endpoint: set live = false "
        "(a broker kind such as fakebroker has one)"
    )


def test_phase_sandbox_refuses_a_live_venue(no_broker_env):
    assert error_of(phase={"name": "sandbox"}, venue={"kind": "fakebroker", "live": True}) == (
        "config error: venue.live: phase sandbox is paper only: set [venue] live = false, "
        "or move to phase small or above to trade real money"
    )


def test_phase_small_may_trade_a_live_venue(no_broker_env):
    s = settings(
        phase={"name": "small"}, run={"initial_cash": 200}, venue={"kind": "fakebroker", "live": True}
    )
    assert s.venue.live


def test_a_live_venue_refuses_the_recorded_feed(no_broker_env):
    assert error_of(venue={"kind": "fakebroker", "live": True}, runtime={"feed": "recorded"}).startswith(
        "config error: runtime.feed: the recorded feed replays history: "
        "it cannot trade venue fakebroker's live"
    )


def test_an_unknown_venue_kind_is_refused():
    assert error_of(venue={"kind": "nyse"}) == (
        "config error: venue.kind: Input should be 'paper', 'fakebroker', 'alpaca', 'ccxt', 'oanda' or 'ib' "
        "(got 'nyse')"
    )


@pytest.mark.parametrize(
    ("kind", "live", "endpoint"),
    [
        ("fakebroker", False, "http://127.0.0.1:8765"),
        ("alpaca", False, "https://paper-api.alpaca.markets"),
        ("alpaca", True, "https://api.alpaca.markets"),
        ("oanda", False, "https://api-fxpractice.oanda.com"),
        ("oanda", True, "https://api-fxtrade.oanda.com"),
        ("ib", False, "tcp://127.0.0.1:7497"),
        ("ib", True, "tcp://127.0.0.1:7496"),
        ("ccxt", False, ""),  # the exchange's own sandbox URLs (ccxt's set_sandbox_mode)
    ],
)
def test_each_broker_defaults_to_its_paper_endpoint_and_live_needs_saying(kind, live, endpoint):
    venue = settings(venue={"kind": kind, "live": live}).venue
    assert venue.endpoint == endpoint
    assert venue.drive_clock is (kind == "fakebroker")  # only the local fake's clock is driven by default


def test_a_real_brokers_clock_cannot_be_driven():
    assert error_of(venue={"kind": "alpaca", "drive_clock": True}) == (
        "config error: venue.drive_clock: only a local fake's market clock can be driven, not "
        "paper-api.alpaca.markets: set drive_clock = false, or url to the local fake"
    )


def test_the_fake_broker_accepts_default_keys_when_none_are_set(no_broker_env):
    assert venue_keys(settings(venue={"kind": "fakebroker"})) == ("fake-key", "fake-secret")


def test_half_a_key_pair_is_a_missing_key(no_broker_env, monkeypatch):
    monkeypatch.setenv("HFLITE_BROKER_KEY_ID", "kid-123456")
    with pytest.raises(ConfigError) as info:
        venue_keys(settings(venue={"kind": "fakebroker"}))
    assert str(info.value) == (
        "venue fakebroker needs HFLITE_BROKER_KEY_ID and HFLITE_BROKER_SECRET (set them in .env)"
    )


def test_a_broker_without_default_keys_requires_them(no_broker_env, monkeypatch):
    monkeypatch.delitem(DEFAULT_VENUE_KEYS, "fakebroker")  # as a real broker: no fallback
    with pytest.raises(
        ConfigError, match=r"^venue fakebroker needs HFLITE_BROKER_KEY_ID and HFLITE_BROKER_SECRET"
    ):
        venue_keys(settings(venue={"kind": "fakebroker"}))


def test_the_paper_venue_has_no_keys():
    with pytest.raises(ConfigError, match="venue paper is simulated in-process: it has no keys"):
        venue_keys(settings())


def test_keys_come_from_the_named_variables(no_broker_env, monkeypatch):
    monkeypatch.setenv("MY_KID", "kid-abcdef-1")
    monkeypatch.setenv("MY_SECRET", "sec-abcdef-2")
    s = settings(venue={"kind": "fakebroker", "key_id_env": "MY_KID", "secret_env": "MY_SECRET"})
    assert venue_keys(s) == ("kid-abcdef-1", "sec-abcdef-2")


def test_keys_in_dot_env_load_without_breaking_the_settings(no_broker_env):
    (no_broker_env / ".env").write_text(
        "HFLITE_BROKER_KEY_ID=kid-from-dotenv-7\nHFLITE_BROKER_SECRET=sec-from-dotenv-8\n"
        "HFLITE_CONFIRM_LIVE=LIVE t-run\n"
    )
    s = settings(venue={"kind": "fakebroker"})
    assert venue_keys(s) == ("kid-from-dotenv-7", "sec-from-dotenv-8")


def test_a_misspelt_nested_variable_in_dot_env_is_still_an_unknown_key(no_broker_env):
    (no_broker_env / ".env").write_text("HFLITE_RSK__RISK_PCT=0.3\n")
    assert "unknown key" in error_of()


def test_keys_never_reach_the_redacted_settings_nor_a_repr(no_broker_env, monkeypatch):
    key_id, secret = "kid-never-shown-31", "sec-never-shown-32"
    monkeypatch.setenv("HFLITE_BROKER_KEY_ID", key_id)
    monkeypatch.setenv("HFLITE_BROKER_SECRET", secret)
    s = settings(venue={"kind": "fakebroker"})
    shown = json.dumps(redacted(s)) + repr(s) + str(s) + repr(s.venue.key_id) + repr(s.venue.secret)
    assert key_id not in shown and secret not in shown
    assert redact.redact(f"signed with {key_id} and {secret}") == "signed with *** and ***"


def test_keys_are_not_read_from_the_config_file():
    assert (
        error_of(venue={"kind": "fakebroker", "key_id": "kid-in-a-file"})
        == "config error: venue.key_id: unknown key"
    )


def test_a_venue_url_must_be_http():
    assert error_of(venue={"url": "ftp://x"}).startswith(
        "config error: venue.url: String should match pattern"
    )


# ---------------------------------------------------------------------------------------------------
# [runtime]


def test_the_runtime_defaults():
    r = settings().runtime
    assert (r.feed, r.speed, r.poll_delay_s, r.retry_s, r.journal) == ("live", None, 5.0, 30.0, None)
    assert (r.log_dir, r.log_max_mb, r.log_backups, r.heartbeat_s) == (Path("var/logs"), 10.0, 5, 1.0)


def test_speed_paces_the_recorded_feed_only():
    assert settings(runtime={"feed": "recorded", "speed": 86400}).runtime.speed == 86400
    assert error_of(runtime={"speed": 60}) == (
        'config error: runtime.speed: 60 paces the recorded feed only: set feed = "recorded" or remove speed'
    )


@pytest.mark.parametrize("key", ["speed", "poll_delay_s", "retry_s", "log_max_mb", "heartbeat_s"])
def test_runtime_numbers_must_be_finite(key):
    runtime = {"feed": "recorded", key: float("inf")}
    assert error_of(runtime=runtime).startswith(f"config error: runtime.{key}: must be a finite number")


# ---------------------------------------------------------------------------------------------------
# the live gate


def live_settings() -> Settings:
    return settings(
        phase={"name": "small"}, run={"initial_cash": 200}, venue={"kind": "fakebroker", "live": True}
    )


def never_asked(prompt: str) -> str:
    raise AssertionError(f"asked {prompt!r}")


def test_a_paper_run_passes_without_a_question():
    check_live(settings(), False, confirm=never_asked, is_tty=True)


def test_a_live_venue_without_the_flag_is_refused(no_broker_env):
    with pytest.raises(LiveTradingRefused) as info:
        check_live(live_settings(), False, confirm=never_asked, is_tty=True)
    assert str(info.value) == (
        "venue fakebroker is configured for its live (real-money) endpoint: add --live to trade real money, "
        "or set [venue] live = false for its paper endpoint"
    )


def test_the_flag_without_a_live_venue_is_refused(no_broker_env):
    with pytest.raises(LiveTradingRefused) as info:
        check_live(settings(venue={"kind": "fakebroker"}), True, confirm=never_asked, is_tty=True)
    assert str(info.value) == (
        "--live: venue fakebroker is configured for its paper endpoint: set [venue] live = true to trade "
        "real money, or drop --live"
    )


def test_the_flag_with_the_paper_venue_is_refused():
    with pytest.raises(
        LiveTradingRefused, match=r"^--live: the paper venue is simulated and has no live endpoint"
    ):
        check_live(settings(), True, confirm=never_asked, is_tty=True)


def test_typing_live_and_the_run_name_confirms(no_broker_env):
    asked: list[str] = []

    def confirm(prompt: str) -> str:
        asked.append(prompt)
        return "LIVE t-run"

    check_live(live_settings(), True, confirm=confirm, is_tty=True)
    assert confirmation_text(live_settings()) == "LIVE t-run"
    assert len(asked) == 1 and "REAL MONEY" in asked[0] and "'LIVE t-run'" in asked[0]


@pytest.mark.parametrize("answer", ["", "yes", "LIVE", "live t-run", "LIVE other-run", "LIVE t-run!"])
def test_any_other_answer_refuses(no_broker_env, answer):
    with pytest.raises(
        LiveTradingRefused, match="^live trading refused: the confirmation was not 'LIVE t-run'$"
    ):
        check_live(live_settings(), True, confirm=lambda _: answer, is_tty=True)


def test_an_interrupted_question_refuses(no_broker_env):
    def interrupted(_: str) -> str:
        raise EOFError

    with pytest.raises(LiveTradingRefused, match="not confirmed"):
        check_live(live_settings(), True, confirm=interrupted, is_tty=True)


def test_the_environment_does_not_confirm_on_a_terminal(no_broker_env, monkeypatch):
    monkeypatch.setenv("HFLITE_CONFIRM_LIVE", "LIVE t-run")
    with pytest.raises(LiveTradingRefused):
        check_live(live_settings(), True, confirm=lambda _: "no", is_tty=True)


def test_without_a_terminal_the_environment_confirms(no_broker_env, monkeypatch):
    monkeypatch.setenv("HFLITE_CONFIRM_LIVE", "LIVE t-run")
    check_live(live_settings(), True, confirm=never_asked, is_tty=False)


def test_without_a_terminal_and_no_confirmation_the_run_is_refused(no_broker_env):
    with pytest.raises(LiveTradingRefused) as info:
        check_live(live_settings(), True, confirm=never_asked, is_tty=False)
    assert str(info.value) == (
        "live trading refused: no terminal to confirm on: set HFLITE_CONFIRM_LIVE='LIVE t-run' to confirm"
    )


def test_without_a_terminal_a_wrong_confirmation_is_refused(no_broker_env, monkeypatch):
    monkeypatch.setenv("HFLITE_CONFIRM_LIVE", "LIVE another-run")
    with pytest.raises(
        LiveTradingRefused, match="^live trading refused: HFLITE_CONFIRM_LIVE is not 'LIVE t-run'$"
    ):
        check_live(live_settings(), True, confirm=never_asked, is_tty=False)


# ---------------------------------------------------------------------------------------------------
# the run's log file


@pytest.fixture
def log_file_off():
    yield
    logs.disable_file()
    logs.configure("WARNING")


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_log_file_holds_one_redacted_json_object_per_line(tmp_path, log_file_off, capsys):
    secret = "sk-log-file-secret-77"
    redact.register(secret)
    logs.configure("INFO")
    path = logs.enable_file(tmp_path / "logs", "t-run")
    logs.get("hflite.test").info("bar_done", symbol="BTC-USD", note=f"key {secret}", api_key="plain-text")
    logging.getLogger("httpx").warning("GET http://h/x?api_key=%s", secret)
    try:
        raise RuntimeError(f"boom {secret}")
    except RuntimeError:
        logs.get("hflite.test").exception("failed")
    logs.disable_file()

    assert path == tmp_path / "logs" / "t-run.jsonl"
    text = path.read_text(encoding="utf-8")
    assert secret not in text and "plain-text" not in text
    lines = read_lines(path)
    assert [line["event"] for line in lines][0] == "bar_done"
    assert lines[0]["symbol"] == "BTC-USD" and lines[0]["level"] == "info" and "timestamp" in lines[0]
    assert lines[1]["logger"] == "httpx" and lines[1]["event"] == "GET http://h/x?api_key=***"
    assert lines[2]["event"] == "failed" and "RuntimeError: boom ***" in lines[2]["exception"]
    assert "bar_done" in capsys.readouterr().err  # the console still gets its lines


def test_the_log_file_rotates_at_its_size_and_keeps_its_backups(tmp_path, log_file_off):
    logs.configure("INFO")
    max_mb = 0.002  # 2,097 bytes
    path = logs.enable_file(tmp_path, "t-run", max_mb=max_mb, backups=2)
    for i in range(200):
        logs.get("hflite.test").info("tick", n=i, pad="x" * 40)
    logs.disable_file()

    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["t-run.jsonl", "t-run.jsonl.1", "t-run.jsonl.2"]
    for f in files:
        assert f.stat().st_size <= int(max_mb * 1024 * 1024)
        assert all(line["event"] == "tick" for line in read_lines(f))
    assert read_lines(path)[-1]["n"] == 199


def test_reconfiguring_logging_keeps_the_log_file(tmp_path, log_file_off):
    path = logs.enable_file(tmp_path, "t-run")
    logs.configure("INFO", json=True)
    logs.get("hflite.test").info("after_reconfigure")
    logging.getLogger("hflite.lib").warning("stdlib after reconfigure")
    logs.disable_file()
    assert [line["event"] for line in read_lines(path)] == ["after_reconfigure", "stdlib after reconfigure"]


def test_the_log_file_needs_a_positive_size_and_a_backup(tmp_path):
    with pytest.raises(ValueError, match="max_mb must be > 0"):
        logs.enable_file(tmp_path, "t-run", max_mb=0)
    with pytest.raises(ValueError, match="backups must be >= 1"):
        logs.enable_file(tmp_path, "t-run", backups=0)
    assert error_of(runtime={"log_backups": 0}).startswith(
        "config error: runtime.log_backups: Input should be"
    )


# ---------------------------------------------------------------------------------------------------
# configs/paper.toml


def test_the_paper_config_loads_as_a_sandbox_paper_run():
    s = load_settings(REPO / "configs" / "paper.toml")
    assert s.run.symbols == ["BTC-USD", "EURUSD"] and s.run.frequency == "1d"
    assert s.phase is not None and s.phase.name == "sandbox"
    assert (s.venue.kind, s.venue.live, s.runtime.feed) == ("paper", False, "live")
    assert (s.risk.risk_pct, s.risk.max_drawdown_pct, s.risk.max_open_positions) == (0.5, 5.0, 2)
    check_live(s, False, confirm=never_asked, is_tty=False)


def test_the_paper_config_replays_the_sample_with_the_recorded_feed():
    s = load_settings(REPO / "configs" / "paper.toml", {"runtime": {"feed": "recorded", "speed": 86400}})
    assert (s.runtime.feed, s.runtime.speed) == ("recorded", 86400.0)
    assert isinstance(s.venue, VenueConfig)
