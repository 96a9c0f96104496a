"""Shared fixtures: the embedded sample imported once per test session (per xdist worker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hflite.config import Settings, load_settings
from hflite.data.sample import ensure_sample
from hflite.data.store import Store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def no_venue_key_in_any_file(tmp_path_factory: pytest.TempPathFactory):
    """At the end of the session, every file the suite's runs wrote under the session's temporary
    folder (journals, logs, reports, configs, stores) is searched for the venue test keys and account
    ids (``tests.venues.contract.TEST_SECRETS``): one found is a leak, and fails the session."""
    yield
    from tests.venues.contract import TEST_SECRETS

    secrets = [s.encode() for s in sorted(TEST_SECRETS)]
    if not secrets:
        return
    leaks: list[str] = []
    for path in tmp_path_factory.getbasetemp().rglob("*"):
        if not path.is_file() or path.name == ".env" or path.stat().st_size > 200_000_000:
            continue
        data = path.read_bytes()
        leaks += [f"{path}: {s.decode()[:4]}..." for s in secrets if s in data]
    if leaks:
        pytest.fail("venue test keys written to files:\n" + "\n".join(leaks[:20]), pytrace=False)


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("store"))
    ensure_sample(store)
    return store


def make_settings(store: Store, **sections: dict[str, Any]) -> Settings:
    """Settings with the store's folder and the given sections merged over a small default run."""
    base: dict[str, Any] = {
        "run": {"symbols": ["SPY"], "start": "2015-01-02", "end": "2019-12-31", "benchmarks": ["SPY"]},
        "strategy": {"name": "trend"},
        "data": {"dir": str(store.root)},
        # hermetic: no test reads the developer's LLM journal unless it configures [llm] itself
        "llm": {"mode": "off"},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return load_settings(None, base)


def synthetic_bars(
    n: int,
    *,
    seed: int = 7,
    start: str = "2020-01-01",
    freq: str = "1D",
    drift: float = 0.0,
    vol: float = 0.01,
    volume: float = 1e6,
) -> pd.DataFrame:
    """A random-walk OHLCV frame for unit tests (never for the demo)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(drift, vol, n)))
    open_ = np.concatenate(([close[0]], close[:-1])) * (1 + rng.normal(0, vol / 4, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, vol / 2, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, vol / 2, n))
    ts = pd.date_range(start, periods=n, freq=freq, tz="UTC")
    return pd.DataFrame(
        {"ts": ts, "open": open_, "high": high, "low": low, "close": close, "volume": np.full(n, volume)}
    )
