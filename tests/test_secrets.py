"""No secret reaches a log line, an exception, the store or the LLM journal (issue 12).

Every vendor gets a distinctive fake key in the environment variable the code reads; every data provider
and HTTP LLM backend then runs against the local test servers at every log level, plain and JSON, through
success and failure (4xx, 5xx, malformed answers, timeouts, unreachable hosts, a vendor echoing the key
back), and all output and every file written is searched for the keys.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import json
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import structlog
from pydantic import SecretStr
from typer.testing import CliRunner

from hflite import logs, redact
from hflite.ai.llm.base import LLMRequest, LLMUnavailable, Message
from hflite.ai.llm.config import OpenAIConfig
from hflite.ai.llm.ollama import OllamaLLM
from hflite.ai.llm.openai_compat import OpenAICompatLLM
from hflite.ai.llm.roles import explain_job, facts_from_rows
from hflite.ai.llm.service import LLMService
from hflite.cli import app
from hflite.config import load_llm_settings
from hflite.data.providers.base import HttpOptions, RejectedError
from hflite.data.providers.fred import FredProvider
from tests.llm_servers import STANCE_SCHEMA, FakeLLMServer, closed_port_url
from tests.providers.contract import SCENARIOS, ProviderCase, fast_options
from tests.providers.server import FixtureServer, Route

HERE = Path(__file__).resolve().parent
PROVIDER_CASES: list[ProviderCase] = [
    importlib.import_module(f"tests.providers.{p.stem}").CASE
    for p in sorted((HERE / "providers").glob("case_*.py"))
]

#: One distinctive fake key per vendor, in the environment variable the code reads it from.
FAKE_KEYS = {
    "FRED_API_KEY": "fredFAKEkey0x7Q2w9E4r",
    "ALPHAVANTAGE_API_KEY": "AVFAKEKEY0x8Z3y6X1",
    "POLYGON_API_KEY": "polyFAKEkey0x5T8u2I7",
    "FINNHUB_API_KEY": "finnFAKEtok0x4K9j3H6",
    "NEWSAPI_KEY": "newsFAKEkey0x2M7n5B8",
    "OANDA_API_TOKEN": "oandaFAKEtok-0x6P1o4L9",
    "COINGECKO_API_KEY": "CG-geckoFAKEkey0x3V5c",
    "HFLITE_LLM__OPENAI__API_KEY": "sk-openaiFAKEkey0x9R2e7W",
}
#: The password of a proxy in front of Ollama: only ever written in the configured URL.
OLLAMA_PASSWORD = "ollamaFAKEpw0x1A2s3D"
SECRETS = (*FAKE_KEYS.values(), OLLAMA_PASSWORD)
#: The environment variable of each provider's key (yfinance and ccxt need none).
KEY_ENV = {
    "fred": "FRED_API_KEY",
    "alphavantage": "ALPHAVANTAGE_API_KEY",
    "polygon": "POLYGON_API_KEY",
    "finnhub": "FINNHUB_API_KEY",
    "newsapi": "NEWSAPI_KEY",
    "oanda": "OANDA_API_TOKEN",
    "coingecko": "COINGECKO_API_KEY",
}
LEVELS = ("DEBUG", "INFO", "WARNING")
FORMATS = ("plain", "json")
PROVIDER_SCENARIOS = (*SCENARIOS, "echo", "unreachable")
LLM_BEHAVIOURS = (
    "ok", "stream", "bad_schema", "500", "404", "401", "malformed", "missing_fields", "stream_error",
    "slow", "trickle", "models", "unreachable",
)  # fmt: skip


def leaked(text: str) -> list[str]:
    """The fake secrets whose first ten characters appear in ``text`` (a truncated key leaks too)."""
    return [s for s in SECRETS if s[:10] in text]


def files_text(root: Path) -> str:
    """Every file under ``root`` as text: raw bytes, plus the cells of parquet tables (compressed)."""
    parts = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        parts.append(path.read_bytes().decode("latin-1"))
        if path.suffix == ".parquet":
            parts.append(pd.read_parquet(path).to_csv())
    return "\n".join(parts)


def shown(exc: BaseException | None) -> str:
    """What a user may see of an exception: its message, repr and traceback."""
    return "" if exc is None else "".join(traceback.format_exception(exc)) + repr(exc)


@contextlib.contextmanager
def captured(level: str, fmt: str) -> Iterator[io.StringIO]:
    """Everything printed or logged inside, logging configured as ``--log-level`` / ``--log-json`` do."""
    out = io.StringIO()
    with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
        logs.configure(level, json=fmt == "json")
        yield out


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Every vendor's fake key in the environment, a fresh redactor, no stray .env; logging reset after."""
    monkeypatch.chdir(tmp_path)
    for name, value in FAKE_KEYS.items():
        monkeypatch.setenv(name, value)
    redact.clear()
    yield FAKE_KEYS
    redact.clear()
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()


@pytest.fixture
def fresh_redactor() -> Iterator[None]:
    """The process-wide redactor empty before the test and after it."""
    redact.clear()
    yield
    redact.clear()


# -- the redactor ---------------------------------------------------------------------------------
def test_sanitize_url_masks_key_parameters_and_userinfo() -> None:
    url = "https://me:pw0rd@api.example.com/v1/obs?series_id=DGS10&api_key=abc123&apiKey=Q&token=t&x=1#top"
    assert (
        redact.sanitize_url(url)
        == "https://***@api.example.com/v1/obs?series_id=DGS10&api_key=***&apiKey=***&token=***&x=1#top"
    )


def test_sanitize_url_masks_every_vendor_parameter_name_in_any_spelling() -> None:
    names = ["apikey", "APIKEY", "api-key", "key", "access_token", "secret", "signature", "password"]
    url = "http://h/p?" + "&".join(f"{n}=v{i}" for i, n in enumerate(names))
    assert redact.sanitize_url(url) == "http://h/p?" + "&".join(f"{n}=***" for n in names)


def test_sanitize_url_leaves_a_url_without_secrets_as_it_was() -> None:
    url = "http://127.0.0.1:8080/v2/aggs/ticker/AAPL/range/1/day/2024-01-02/2024-01-08?adjusted=true&limit=5"
    assert redact.sanitize_url(url) == url


def test_redact_masks_a_registered_secret_wherever_it_appears() -> None:
    redactor = redact.Redactor()
    assert redactor.register("s3cretVALUE99") is True
    assert redactor.register(SecretStr("an0therSECRET")) is True
    assert (
        redactor.redact("bad key s3cretVALUE99 (path /bot/an0therSECRET/x)")
        == "bad key *** (path /bot/***/x)"
    )


def test_a_short_secret_is_not_registered_but_its_parameter_is_still_masked() -> None:
    redactor = redact.Redactor()
    assert redactor.register("abc") is False
    assert redactor.redact("abc: GET /q?symbol=SPY&apikey=abc") == "abc: GET /q?symbol=SPY&apikey=***"


def test_redact_masks_credential_headers_and_fields_in_every_notation() -> None:
    redactor = redact.Redactor()
    assert redactor.redact("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    assert redactor.redact("X-Api-Key: k123456") == "X-Api-Key: ***"
    assert redactor.redact("{'X-Finnhub-Token': 'tok999999'}") == "{'X-Finnhub-Token': '***'}"
    assert redactor.redact('{"api_key": "abc", "n": 1}') == '{"api_key": "***", "n": 1}'
    assert redactor.redact("fetch api_key=abc rows=3") == "fetch api_key=*** rows=3"
    assert redactor.redact("see http://u:p@host:1/x") == "see http://***@host:1/x"


def test_redact_keeps_ordinary_text_as_it_was() -> None:
    text = (
        "partition key: SPY/1d; prompt_tokens=350 max_tokens=192; The value for variable api_key is not "
        "registered. Read https://research.stlouisfed.org/docs/api/api_key.html for more information."
    )
    assert redact.Redactor().redact(text) == text


def test_register_environment_reads_key_variables_and_nothing_else() -> None:
    redactor = redact.Redactor()
    names = redactor.register_environment(
        {"FRED_API_KEY": "fred-0123456789", "MY_BROKER_TOKEN": "tok-abcdef123", "HOME": "/home/somebody"}
    )
    assert names == ["FRED_API_KEY", "MY_BROKER_TOKEN"]
    assert redactor.redact("fred-0123456789 tok-abcdef123 /home/somebody") == "*** *** /home/somebody"


def test_the_structlog_processor_redacts_values_and_secret_named_fields(fresh_redactor: None) -> None:
    redact.register("registeredSECRET1")
    event = {
        "event": "GET https://h/x?apikey=abc&n=1",
        "api_key": "short",
        "detail": ["registeredSECRET1 refused", {"url": "http://u:p@h/"}],
        "rows": 3,
    }
    assert logs.redact_event(None, "info", event) == {
        "event": "GET https://h/x?apikey=***&n=1",
        "api_key": "***",
        "detail": ["*** refused", {"url": "http://***@h/"}],
        "rows": 3,
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_structlog_lines_and_their_tracebacks_carry_no_secret(fmt: str, secret_env: dict[str, str]) -> None:
    key = secret_env["POLYGON_API_KEY"]
    with captured("DEBUG", fmt) as out:
        try:
            params = {"apiKey": key}  # a local variable a rich traceback would show
            raise RuntimeError(f"refused GET /v2/aggs?apiKey={params['apiKey']}")
        except RuntimeError as exc:
            logs.get("hflite.test").error("fetch.failed", url=f"http://h/v2?apiKey={key}", exc_info=exc)
    text = out.getvalue()
    assert leaked(text) == []
    assert "fetch.failed" in text and "apiKey=***" in text


def test_stdlib_lines_and_their_tracebacks_carry_no_secret(secret_env: dict[str, str]) -> None:
    key = secret_env["FRED_API_KEY"]
    with captured("DEBUG", "plain") as out:
        logging.getLogger("httpx").info("HTTP Request: GET %s", f"http://h/fred?api_key={key}&x=1")
        try:
            raise ValueError(f"bad key {key}")
        except ValueError:
            logging.getLogger("urllib3").exception("request failed for %s", key)
    text = out.getvalue()
    assert leaked(text) == []
    assert "httpx: HTTP Request: GET http://h/fred?api_key=***&x=1" in text
    assert "ValueError: bad key ***" in text


# -- data providers -------------------------------------------------------------------------------
def provider_routes(case: ProviderCase, scenario: str) -> list[Route] | None:
    """The case's routes for ``scenario``, its test key swapped for the fake one where a route matches
    on it; ``echo``: a vendor that refuses and quotes the key back (a proxy's for keyless vendors)."""
    key = FAKE_KEYS[KEY_ENV.get(case.name, "FRED_API_KEY")]
    if scenario == "echo":
        body = f"invalid credentials {key}: GET /v1/quote?apikey={key}&token={key}"
        return [Route(r"/.*", body, status=401, content_type="text/plain")]
    routes = copy.deepcopy(case.routes[scenario])
    for route in routes or []:
        route.query = {k: key if case.key and v == case.key else v for k, v in route.query.items()}
    return routes


def run_provider(case: ProviderCase, scenario: str) -> str | None:
    """One call of the provider (key from the environment) in ``scenario``; what it raised, shown, or
    None when the case has no such scenario."""
    call = case.paginated_call if scenario == "paginated" and case.paginated_call else case.call
    if scenario == "unreachable":
        return shown(call_provider(case, call, closed_port_url()))
    routes = provider_routes(case, scenario)
    if routes is None:
        return None
    with FixtureServer(routes) as srv:
        return shown(call_provider(case, call, srv.url))


def call_provider(case: ProviderCase, call: Any, url: str) -> BaseException | None:
    provider = case.make(url, None)
    try:
        call(provider)
    except Exception as exc:  # noqa: BLE001 - the test shows it
        return exc
    finally:
        provider.close()
    return None


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", PROVIDER_CASES, ids=[c.name for c in PROVIDER_CASES])
def test_no_provider_shows_a_key_in_any_scenario_at_any_log_level(
    case: ProviderCase, level: str, fmt: str, secret_env: dict[str, str]
) -> None:
    seen: dict[str, str] = {}
    for scenario in PROVIDER_SCENARIOS:
        with captured(level, fmt) as out:
            raised = run_provider(case, scenario)
        if raised is not None:
            seen[scenario] = out.getvalue() + raised
    leaks = {scenario: leaked(text) for scenario, text in seen.items() if leaked(text)}
    assert leaks == {}
    assert "invalid credentials ***" in seen["echo"]  # refused, and the vendor's words kept
    if level != "WARNING" and case.name != "ccxt":  # ccxt goes through urllib3, which logs at DEBUG
        assert "HTTP Request: GET http://127.0.0.1:" in seen["success"]


@pytest.mark.parametrize(
    ("name", "shown_param"),
    [("fred", "api_key=***&file_type=json"), ("alphavantage", "apikey=***"), ("polygon", "apiKey=***")],
)
def test_a_key_sent_as_a_query_parameter_is_logged_as_stars(
    name: str, shown_param: str, secret_env: dict[str, str]
) -> None:
    case = next(c for c in PROVIDER_CASES if c.name == name)
    with captured("INFO", "plain") as out:
        run_provider(case, "success")
    request_lines = [line for line in out.getvalue().splitlines() if "HTTP Request" in line]
    assert request_lines and all(shown_param in line for line in request_lines)
    assert leaked(out.getvalue()) == []


def test_a_key_given_to_a_provider_directly_is_registered_for_redaction(
    monkeypatch: pytest.MonkeyPatch, fresh_redactor: None
) -> None:
    monkeypatch.delenv("FRED_API_KEY", raising=False)
    key = "fredDIRECTkey0x4455667788"
    provider = FredProvider(key=key, url="http://127.0.0.1:9", options=fast_options())
    provider.close()
    assert redact.redact(f"GET /fred?x={key}") == "GET /fred?x=***"


def test_a_key_cut_by_the_provider_message_limit_is_not_left_half_shown(secret_env: dict[str, str]) -> None:
    key = secret_env["FRED_API_KEY"]
    body = "x" * 190 + key  # the vendor's text is cut at 200 characters, inside the key
    with FixtureServer([Route(r"/.*", body, status=401, content_type="text/plain")]) as srv:
        provider = FredProvider(url=srv.url, options=fast_options())
        with pytest.raises(RejectedError) as info:
            provider.series(
                "DGS10", pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-12", tz="UTC")
            )
        provider.close()
    assert str(info.value).startswith("fred: HTTP 401: xxxxxxxxxx")
    assert leaked(shown(info.value)) == []


def test_a_key_cut_by_the_llm_message_limit_is_not_left_half_shown(secret_env: dict[str, str]) -> None:
    key = secret_env["HFLITE_LLM__OPENAI__API_KEY"]
    body = "x" * 285 + key  # the vendor's text is cut at 300 characters, inside the key
    with FixtureServer([Route(r"/v1/models", body, status=500, content_type="text/plain")]) as srv:
        llm = OpenAICompatLLM(OpenAIConfig(url=f"{srv.url}/v1", api_key=SecretStr(key)))
        with pytest.raises(LLMUnavailable) as info:
            llm.models(timeout_s=2.0)
        llm.close()
    assert "HTTP 500: xxxxxxxxxx" in str(info.value)
    assert leaked(shown(info.value)) == []


def test_a_provider_timing_out_shows_no_key(secret_env: dict[str, str]) -> None:
    import socket

    options = HttpOptions(
        timeout_s=0.2, max_tries=2, backoff_base_s=0.0, backoff_max_s=0.0, sleep=lambda _s: None
    )
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with captured("DEBUG", "json") as out:
            provider = FredProvider(url=url, options=options)
            try:
                provider.series(
                    "DGS10", pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-12", tz="UTC")
                )
            except Exception as exc:  # noqa: BLE001 - the test shows it
                raised = shown(exc)
            finally:
                provider.close()
    assert "timed out after 0.2 s" in raised
    assert "connect_tcp.complete" in out.getvalue()  # it connected, then waited for an answer
    assert leaked(out.getvalue() + raised) == []


# -- LLM backends ---------------------------------------------------------------------------------
def llm_request(timeout_s: float, stream: bool = False) -> LLMRequest:
    messages = (Message("system", "Answer with JSON only."), Message("user", "SPY: your stance?"))
    return LLMRequest(messages, STANCE_SCHEMA, max_tokens=64, timeout_s=timeout_s, stream=stream)


def llm_backend(vendor: str, server: FakeLLMServer, url: str | None = None) -> OllamaLLM | OpenAICompatLLM:
    """The backend configured the way a user does it: ``[llm]`` from the environment."""
    cfg = load_llm_settings()
    if vendor == "ollama":
        ollama = cfg.ollama.model_copy(update={"url": url}) if url else cfg.ollama
        return OllamaLLM(ollama)
    openai = cfg.openai.model_copy(update={"url": url}) if url else cfg.openai
    return OpenAICompatLLM(openai)


def llm_env(monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer) -> None:
    """``[llm]`` pointed at the fake: Ollama behind a proxy whose password is in the URL."""
    monkeypatch.setenv("HFLITE_LLM__OLLAMA__URL", f"http://hfproxy:{OLLAMA_PASSWORD}@127.0.0.1:{server.port}")
    monkeypatch.setenv("HFLITE_LLM__OPENAI__URL", server.openai_url)


def run_llm(vendor: str, server: FakeLLMServer, behaviour: str) -> str:
    """One call of the backend with the server behaving as ``behaviour``; what it raised, shown."""
    url = closed_port_url("/v1" if vendor == "openai" else "") if behaviour == "unreachable" else None
    llm = llm_backend(vendor, server, url)
    server.script([] if behaviour in ("models", "unreachable") else [behaviour])
    try:
        if behaviour == "models":
            server.script(["401", "500"])
            for _ in range(2):
                with contextlib.suppress(Exception):
                    llm.models(timeout_s=1.0)
            llm.models(timeout_s=1.0)
        else:
            llm.chat(llm_request(0.4, stream=behaviour == "stream"))
    except Exception as exc:  # noqa: BLE001 - the test shows it
        return shown(exc)
    finally:
        llm.close()
    return ""


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("vendor", ["ollama", "openai"])
def test_no_llm_backend_shows_a_key_for_any_behaviour_at_any_log_level(
    vendor: str, level: str, fmt: str, secret_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, str] = {}
    with FakeLLMServer(vendor, slow_s=1.0, trickle_every_s=0.1) as server:
        llm_env(monkeypatch, server)
        for behaviour in LLM_BEHAVIOURS:
            with captured(level, fmt) as out:
                raised = run_llm(vendor, server, behaviour)
            seen[behaviour] = out.getvalue() + raised
        if vendor == "openai":  # the key really was sent (and the 401 answer echoed it)
            assert (
                server.requests[0].headers["authorization"]
                == f"Bearer {FAKE_KEYS['HFLITE_LLM__OPENAI__API_KEY']}"
            )
    assert {b: leaked(text) for b, text in seen.items() if leaked(text)} == {}
    assert "HTTP 401" in seen["401"] and "timed out" in seen["slow"] and "timed out" in seen["trickle"]
    if level != "WARNING":
        assert "HTTP Request: POST http://" in seen["ok"]


def test_an_api_key_given_only_in_the_config_is_registered_for_redaction(
    monkeypatch: pytest.MonkeyPatch, fresh_redactor: None
) -> None:
    monkeypatch.delenv("HFLITE_LLM__OPENAI__API_KEY", raising=False)
    key = "sk-configONLYkey0x11223344"
    OpenAICompatLLM(OpenAIConfig(url="http://127.0.0.1:9/v1", api_key=SecretStr(key))).close()
    assert redact.redact(f"echo {key}") == "echo ***"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("level", LEVELS)
def test_the_llm_service_logs_and_journal_hold_no_key(
    level: str, fmt: str, secret_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    verdict = {
        "intent_id": "secrets-SPY", "ts": "2024-06-03 20:00:00+00:00", "symbol": "SPY", "kind": "entry",
        "side": "buy", "price": 527.8, "intent_reason": "trend up", "status": "approved",
        "qty_requested": 40.0, "qty_approved": 40.0, "reason": "risk 0.75% of equity",
    }  # fmt: skip
    job = explain_job(facts_from_rows(verdict))
    with FakeLLMServer("openai") as server:
        llm_env(monkeypatch, server)
        server.script(["401", "401", "500", "500", "ok"])
        overrides = {"mode": "live", "backend": "openai", "fallbacks": ["ollama"], "retries": 1}
        cfg = load_llm_settings(None, {**overrides, "journal": str(tmp_path / "journal.sqlite")})
        with captured(level, fmt) as out:
            service = LLMService(cfg, run_id="secrets", base_dir=tmp_path)
            outcomes = [service.ask(job), service.ask(job)]
            service.close()
    assert service.stats.down == ["openai", "ollama"]
    assert len(outcomes) == 2 and (tmp_path / "journal.sqlite").is_file()
    assert leaked(out.getvalue()) == []
    assert leaked(files_text(tmp_path)) == []


# -- the command line -----------------------------------------------------------------------------
def fred_routes() -> list[Route]:
    case = next(c for c in PROVIDER_CASES if c.name == "fred")
    return copy.deepcopy(case.routes["success"])


def test_data_fetch_from_the_command_line_at_debug_in_json_shows_no_key(tmp_path: Path) -> None:
    """The original report: ``hflite --log-level DEBUG --log-json data fetch`` printed the FRED key."""
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in FAKE_KEYS.items()))
    env = {k: v for k, v in os.environ.items() if k not in FAKE_KEYS and not k.startswith("HFLITE_")}
    with FixtureServer(fred_routes()) as srv:
        env.update(HFLITE_FRED_BASE_URL=srv.url, HFLITE_DATA__DIR=str(tmp_path / "data"), COLUMNS="200")
        done = subprocess.run(  # noqa: S603 - our own CLI
            [str(Path(sys.executable).parent / "hflite"), "--log-level", "DEBUG", "--log-json",
             "data", "fetch", "--provider", "fred", "--series", "DGS10", "--start", "2024-01-01"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert srv.requests and srv.requests[0][1]["api_key"] == [FAKE_KEYS["FRED_API_KEY"]]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "api_key=***" in done.stderr
    assert leaked(done.stdout + done.stderr) == []
    assert leaked(files_text(tmp_path / "data")) == []


@pytest.mark.parametrize(
    ("level", "json_flag", "routes", "exit_code", "status"),
    [
        ("INFO", [], fred_routes(), 0, "unchanged"),  # the sample already holds these values
        ("DEBUG", ["--log-json"], [Route(r"/fred/.*", {"error_message": "denied"}, status=400)], 1, "denied"),
    ],
    ids=["success", "refused"],
)
def test_data_fetch_in_process_shows_no_key_in_any_output_or_file(
    level: str,
    json_flag: list[str],
    routes: list[Route],
    exit_code: int,
    status: str,
    secret_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FixtureServer(routes) as srv:
        monkeypatch.setenv("HFLITE_FRED_BASE_URL", srv.url)
        monkeypatch.setenv("HFLITE_DATA__DIR", str(tmp_path / "data"))
        monkeypatch.setenv("COLUMNS", "200")
        result = CliRunner().invoke(
            app,
            ["--log-level", level, *json_flag, "data", "fetch", "--provider", "fred", "--series", "DGS10"],
        )
    assert result.exit_code == exit_code, result.output
    assert status in result.stdout and "api_key=***" in result.stderr
    assert leaked(result.output + result.stderr + shown(result.exception)) == []
    assert leaked(files_text(tmp_path)) == []


def test_a_report_config_holds_no_password_or_key_from_an_llm_server_url(sample_store):
    from hflite.config import redacted
    from tests.conftest import make_settings

    settings = make_settings(
        sample_store,
        llm={
            "mode": "off",
            "ollama": {"url": "http://alice:hunter2-pass-9@127.0.0.1:11434"},
            "openai": {
                "url": "http://127.0.0.1:8000/v1?api_key=sk-zz-leaky-9911",
                "api_key": "sk-real-key-77",
            },
        },
    )
    text = json.dumps(redacted(settings))
    assert "hunter2-pass-9" not in text and "sk-zz-leaky-9911" not in text and "sk-real-key-77" not in text
    assert redacted(settings)["llm"]["ollama"]["url"] == "http://***@127.0.0.1:11434"
    assert redacted(settings)["run"]["symbols"] == ["SPY"]


def test_llm_check_wide_shows_a_server_url_without_its_password(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from hflite.cli import app

    cfg = tmp_path / "llm.toml"
    cfg.write_text('[llm]\nbackend = "ollama"\n[llm.ollama]\nurl = "http://bob:s3cret-pass-42@127.0.0.1:9"\n')
    result = CliRunner().invoke(
        app,
        ["llm", "check", "--config", str(cfg), "--no-call", "--timeout", "0.5", "--wide"],
        env={"COLUMNS": "300"},
    )
    assert "s3cret-pass-42" not in result.output
    assert "http://***@127.0.0.1:9" in result.output
