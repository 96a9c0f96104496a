"""HedgeFund-Lite: a personal, explainable, risk-first trading system.

The public surface is small on purpose; ``tests/test_public_api.py`` pins it. Names load lazily so
that ``import hflite.domain`` (or the engine alone) does not pay for configuration libraries.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["ConfigError", "Settings", "__version__", "load_settings"]


def __getattr__(name: str) -> Any:
    if name in ("ConfigError", "Settings", "load_settings"):
        from hflite import config

        return getattr(config, name)
    raise AttributeError(f"module 'hflite' has no attribute {name!r}")
