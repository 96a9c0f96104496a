"""Fixtures shared by the vendor test modules: one local server per module, re-pointed per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.providers.server import FixtureServer, Route


@pytest.fixture(scope="module")
def server() -> Iterator[FixtureServer]:
    with FixtureServer([]) as srv:
        yield srv


@pytest.fixture
def serve(server: FixtureServer) -> Callable[..., FixtureServer]:
    """Point the module's server at these routes (one server for the module keeps the tests fast)."""

    def _serve(*routes: Route) -> FixtureServer:
        server.routes = list(routes)
        server.requests.clear()
        return server

    return _serve
