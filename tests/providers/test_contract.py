"""One contract suite for every data provider, against a local server speaking each vendor's API.

Each ``case_<vendor>.py`` beside this file declares a ``CASE`` (routes answering with payloads in
the vendor's documented format, kept under ``fixtures/<vendor>/``) and the values the frame must hold.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import pandas as pd
import pytest

from hflite.data.providers.base import MalformedResponseError, MissingKeyError, RejectedError, TransientError
from tests.providers.contract import ProviderCase
from tests.providers.server import FixtureServer

HERE = Path(__file__).resolve().parent
CASES: list[ProviderCase] = [
    importlib.import_module(f"tests.providers.{p.stem}").CASE for p in sorted(HERE.glob("case_*.py"))
]
IDS = [c.name for c in CASES]


def run(case: ProviderCase, scenario: str):
    routes = copy.deepcopy(case.routes[scenario])
    if routes is None:
        pytest.skip(f"{case.name} has no {scenario} scenario")
    with FixtureServer(routes) as srv:
        provider = case.make(srv.url, case.key)
        call = case.paginated_call if scenario == "paginated" and case.paginated_call else case.call
        try:
            return call(provider), srv, None
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            return None, srv, exc
        finally:
            provider.close()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_success_returns_the_documented_frame_with_real_values(case):
    frame, _, exc = run(case, "success")
    assert exc is None, exc
    assert list(frame.columns) == case.columns
    assert len(frame) == case.rows
    for col, want in case.first.items():
        got = frame[col].iloc[0]
        if isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-9), col
        elif isinstance(want, pd.Timestamp):
            assert pd.Timestamp(got) == want, col
        else:
            assert got == want, col
    for col in frame.columns:
        if col in ("ts", "date", "period_end", "known_at", "realtime_start"):
            assert str(frame[col].dt.tz) == "UTC", f"{col} must be tz-aware UTC"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_an_empty_answer_is_an_empty_frame_not_an_error(case):
    frame, _, exc = run(case, "empty")
    assert exc is None, exc
    assert frame.empty and list(frame.columns) == case.columns


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_page_is_followed(case):
    frame, srv, exc = run(case, "paginated")
    assert exc is None, exc
    assert len(frame) == case.paginated_rows
    assert len(srv.requests) >= 2


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_429_is_retried_and_then_succeeds(case):
    frame, srv, exc = run(case, "rate_limited")
    assert exc is None, exc
    assert len(frame) == case.rows
    assert len(srv.requests) >= 2


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_server_error_is_retried_a_bounded_number_of_times_then_reported(case):
    _, srv, exc = run(case, "server_error")
    assert isinstance(exc, TransientError), exc
    assert "gave up after 3 tries" in str(exc)
    assert len(srv.requests) == 3
    assert not exc.unreachable  # it answered, badly: not the same as being offline


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_an_invalid_key_fails_fast_with_the_vendor_s_message_and_no_secret(case):
    _, srv, exc = run(case, "invalid_key")
    assert isinstance(exc, RejectedError), exc
    assert case.vendor_message in str(exc)
    assert len(srv.requests) == 1
    if case.key:
        assert case.key not in str(exc)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_malformed_json_is_a_clear_error(case):
    _, _, exc = run(case, "malformed")
    assert isinstance(exc, MalformedResponseError), exc
    assert case.name in str(exc)


@pytest.mark.parametrize("case", [c for c in CASES if c.key_env], ids=[c.name for c in CASES if c.key_env])
def test_a_missing_key_names_the_environment_variable(case, monkeypatch):
    monkeypatch.delenv(case.key_env, raising=False)
    with pytest.raises(MissingKeyError, match=case.key_env):
        case.make("http://127.0.0.1:9", None)
