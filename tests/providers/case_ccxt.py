"""ccxt's Binance spot client against Binance-shaped payloads (``/api/v3/klines`` arrays, error codes).

The markets come from a recorded ``exchangeInfo`` that ccxt's own ``load_markets`` parses, so each
scenario's request count is the klines requests alone. "invalid_key": public OHLCV has no key, so
the final refusal tested is Binance's ``{"code": -1121, "msg": "Invalid symbol."}``.
"""

from __future__ import annotations

import json

import pandas as pd

from hflite.data.providers.base import BAR_COLUMNS
from hflite.data.providers.ccxt_provider import CcxtProvider
from tests.providers.contract import ProviderCase, fast_options
from tests.providers.server import Route, fixture

KLINES = r"/api/v3/klines"
OK = fixture("ccxt", "klines_btcusdt_1h.json")
START, END = pd.Timestamp("2023-12-20 00:00", tz="UTC"), pd.Timestamp("2023-12-20 04:00", tz="UTC")


def make(url: str, key: str | None) -> CcxtProvider:
    """A Binance provider on the local server, its markets parsed from the recorded exchangeInfo."""
    provider = CcxtProvider(key=key, url=url, options=fast_options())
    info = json.loads(fixture("ccxt", "exchange_info_spot.json"))
    exchange = provider.exchange
    exchange.publicGetExchangeInfo = lambda params=None: info  # ccxt's own fetch_markets, no request
    exchange.load_markets()
    del exchange.publicGetExchangeInfo
    return provider


def _paged(provider: CcxtProvider) -> pd.DataFrame:
    """``limit=3``: five hourly bars take two pages, the second from one bar after the first's last."""
    provider.limit = 3
    return provider.bars("BTC/USDT", "1h", START, END)


CASE = ProviderCase(
    name="ccxt",
    make=make,
    call=lambda p: p.bars("BTC/USDT", "1h", START, END),
    paginated_call=_paged,
    routes={
        "success": [
            Route(
                KLINES,
                OK,
                query={
                    "symbol": "BTCUSDT",
                    "interval": "1h",
                    "startTime": "1703030400000",
                    "endTime": "1703044800000",
                    "limit": "1000",
                },
            )
        ],
        "empty": [Route(KLINES, fixture("ccxt", "klines_empty.json"))],
        "paginated": [
            Route(
                KLINES,
                fixture("ccxt", "klines_btcusdt_1h_page1.json"),
                query={"startTime": "1703030400000", "limit": "3"},
            ),
            Route(
                KLINES, fixture("ccxt", "klines_btcusdt_1h_page2.json"), query={"startTime": "1703041200000"}
            ),
        ],
        "rate_limited": [
            Route(
                KLINES,
                fixture("ccxt", "error_too_much_weight.json"),
                status=429,
                headers={"Retry-After": "1"},
                times=1,
            ),
            Route(KLINES, OK),
        ],
        "server_error": [
            Route(KLINES, "<html><body>502 Bad Gateway</body></html>", status=502, content_type="text/html")
        ],
        "invalid_key": [Route(KLINES, fixture("ccxt", "error_invalid_symbol.json"), status=400)],
        "malformed": [
            Route(
                KLINES,
                "<!DOCTYPE html><html><body>Service unavailable</body></html>",
                content_type="text/html",
            )
        ],
    },
    columns=BAR_COLUMNS,
    rows=5,
    first={
        "ts": START,
        "open": 42275.99,
        "high": 42444.0,
        "low": 42235.4,
        "close": 42423.5,
        "volume": 926.83175,
    },
    vendor_message='{"code": -1121, "msg": "Invalid symbol."}',
    key=None,
    key_env=None,
    paginated_rows=5,
)
