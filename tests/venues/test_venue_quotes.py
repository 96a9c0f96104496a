"""Quotes for ``[execution.timing]``: each adapter that can read its venue's best bid and ask answers
``quote(symbol)`` from its fake in the vendor's own format (Alpaca's latest quote, Binance's 24h
ticker, OANDA's pricing, the fake broker's Alpaca-style quote, TWS's snapshot reqMktData ticks), around
the market's last close."""

from __future__ import annotations

import importlib

import pytest

KINDS = ["fakebroker", "alpaca", "ccxt", "oanda", "ib"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_venue_quotes_a_bid_below_an_ask_around_the_last_close(kind, sample_store):
    harness = importlib.import_module(f"tests.venues.test_contract_{kind}").make_harness(sample_store)
    try:
        venue = harness.venue(timeout_s=2.0)
        venue.connect()
        try:
            q = venue.quote(harness.symbol)
            assert venue.quote("NOT-TRADED") is None
        finally:
            venue.close()
        core = harness.front.core if kind == "oanda" else harness.broker
        last = core.latest_quote(harness.symbol)["quote"]  # the fake's market: its last close
    finally:
        harness.close()
    assert q is not None and 0 < q.bid < q.ask
    assert q.spread_bps < 50
    assert q.mid == pytest.approx((last["bp"] + last["ap"]) / 2, rel=1e-6)
