"""HedgeFund-Lite: a personal, explainable, risk-first trading system.

The public surface is small on purpose; ``tests/test_public_api.py`` pins it.
"""

from hflite.config import ConfigError, Settings, load_settings

__version__ = "0.1.0"
__all__ = ["ConfigError", "Settings", "__version__", "load_settings"]
