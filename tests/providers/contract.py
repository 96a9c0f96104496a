"""What every provider case declares for the shared contract suite (test_contract.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from hflite.data.providers.base import HttpOptions
from tests.providers.server import Route

#: Scenarios every provider answers; "paginated" may be None where the vendor has no paging.
SCENARIOS = ("success", "empty", "paginated", "rate_limited", "server_error", "invalid_key", "malformed")


def fast_options() -> HttpOptions:
    """Short timeouts and no real waiting, so retries cost nothing in tests."""
    return HttpOptions(
        timeout_s=2.0, max_tries=3, backoff_base_s=0.0, backoff_max_s=0.0, sleep=lambda _s: None
    )


@dataclass
class ProviderCase:
    """One provider's fixtures and expectations.

    ``make(url, key)`` builds the provider against the local server; ``call(provider)`` performs the
    capability under test and returns a frame; ``routes[scenario]`` are the server's answers;
    ``columns`` the frame's columns; ``rows``/``first``: the success frame's length and first row
    values; ``paginated_rows``: rows after following every page; ``vendor_message``: a fragment of
    the vendor's own error text that the RejectedError must carry.
    """

    name: str
    make: Callable[[str, str | None], Any]
    call: Callable[[Any], pd.DataFrame]
    routes: dict[str, list[Route] | None]
    columns: list[str]
    rows: int
    first: dict[str, Any]
    vendor_message: str
    key: str | None = "test-secret-key-123"
    key_env: str | None = None
    paginated_rows: int | None = None
    paginated_call: Callable[[Any], pd.DataFrame] | None = None  # when paging needs another request
    extra: dict[str, Any] = field(default_factory=dict)
