"""CCXT specifics: paging across ``since``, ccxt's errors translated, markets, the forming bar."""

from __future__ import annotations

import pandas as pd
import pytest

from hflite.data.providers.base import (
    MalformedResponseError,
    NotSupportedError,
    RejectedError,
    TransientError,
)
from hflite.data.providers.ccxt_provider import CcxtProvider
from tests.providers.case_ccxt import END, KLINES, OK, START, _paged, make
from tests.providers.contract import fast_options
from tests.providers.server import FixtureServer, Route, fixture

PAGE1 = fixture("ccxt", "klines_btcusdt_1h_page1.json")
PAGE2 = fixture("ccxt", "klines_btcusdt_1h_page2.json")


def test_pages_advance_since_to_one_bar_after_the_last_and_stop_past_the_end():
    routes = [
        Route(KLINES, PAGE1, query={"startTime": "1703030400000"}),
        Route(KLINES, PAGE2, query={"startTime": "1703041200000"}),
    ]
    with FixtureServer(routes) as srv:
        frame = _paged(make(srv.url, None))

    assert [q["startTime"] for _, q in srv.requests] == [["1703030400000"], ["1703041200000"]]  # 00:00, 03:00
    assert all(q["endTime"] == ["1703044800000"] and q["limit"] == ["3"] for _, q in srv.requests)
    assert frame["ts"].tolist() == list(pd.date_range(START, END, freq="1h"))
    assert frame["ts"].is_unique


def test_an_exchange_id_is_resolved_through_markets_loaded_once():
    routes = [Route(r"/api/v3/exchangeInfo", fixture("ccxt", "exchange_info_spot.json")), Route(KLINES, OK)]
    with FixtureServer(routes) as srv:
        p = CcxtProvider(url=srv.url, options=fast_options())
        first = p.bars("BTCUSDT", "1h", START, END)
        p.bars("BTCUSDT", "1h", START, END)

    assert [path for path, _ in srv.requests] == ["/api/v3/exchangeInfo", KLINES, KLINES]
    assert srv.requests[1][1]["symbol"] == ["BTCUSDT"]
    assert len(first) == 5


def test_the_bar_still_forming_is_dropped():
    with FixtureServer([Route(KLINES, OK)]) as srv:
        p = make(srv.url, None)
        p.now = lambda: pd.Timestamp("2023-12-20 04:30", tz="UTC")
        frame = p.bars("BTC/USDT", "1h", START, END)

    assert frame["ts"].iloc[-1] == pd.Timestamp("2023-12-20 03:00", tz="UTC")


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (400, fixture("ccxt", "error_invalid_symbol.json"), RejectedError, "BadSymbol"),
        (
            401,
            b'{"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}',
            RejectedError,
            "AuthenticationError",
        ),
        (429, fixture("ccxt", "error_too_much_weight.json"), TransientError, "DDoSProtection"),
        (
            418,
            b'{"code": -1003, "msg": "Way too much request weight used; IP banned until 1703031000000."}',
            TransientError,
            "DDoSProtection",
        ),
        (503, b"<html>503 Service Temporarily Unavailable</html>", TransientError, "ExchangeNotAvailable"),
        (504, b"<html>504 Gateway Time-out</html>", TransientError, "RequestTimeout"),
        (200, b"<!DOCTYPE html><html>maintenance</html>", MalformedResponseError, "expected JSON"),
        (200, b'[["1703030400000", "x"]]', MalformedResponseError, "OHLCV"),
        (200, b'{"code": 0, "msg": ""}', MalformedResponseError, "OHLCV"),
    ],
)
def test_ccxt_errors_are_translated_at_the_border(status, body, error, message):
    route = Route(
        KLINES, body, status=status, content_type="text/html" if body.startswith(b"<") else "application/json"
    )
    with FixtureServer([route]) as srv, pytest.raises(error, match=message) as caught:
        make(srv.url, None).bars("BTC/USDT", "1h", START, END)

    assert caught.value.provider == "ccxt"
    assert len(srv.requests) == (3 if error is TransientError else 1)


def test_an_unreachable_exchange_is_transient():
    p = make("http://127.0.0.1:9", None)
    with pytest.raises(TransientError, match="gave up after 3 tries"):
        p.bars("BTC/USDT", "1h", START, END)
    assert p.calls == 3


def test_retry_after_sets_the_wait_before_the_next_try():
    waits: list[float] = []
    routes = [
        Route(
            KLINES,
            fixture("ccxt", "error_too_much_weight.json"),
            status=429,
            headers={"Retry-After": "7"},
            times=1,
        ),
        Route(KLINES, OK),
    ]
    with FixtureServer(routes) as srv:
        p = make(srv.url, None)
        p.options.sleep, p.options.backoff_max_s = waits.append, 8.0
        frame = p.bars("BTC/USDT", "1h", START, END)

    assert waits == [7.0]
    assert len(frame) == 5


def test_every_api_url_is_moved_onto_the_given_root_with_its_path():
    p = CcxtProvider(url="http://127.0.0.1:8080/", options=fast_options())

    assert p.exchange.urls["api"]["public"] == "http://127.0.0.1:8080/api/v3"
    assert p.exchange.urls["api"]["sapi"] == "http://127.0.0.1:8080/sapi/v1"


def test_an_unknown_exchange_or_frequency_is_refused():
    with pytest.raises(ValueError, match="no-such-exchange"):
        CcxtProvider(exchange="no-such-exchange")
    with pytest.raises(NotSupportedError, match="'2d'"):
        CcxtProvider(options=fast_options()).bars("BTC/USDT", "2d", START, END)
