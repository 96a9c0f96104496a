"""The package's public surface is small and pinned."""

from __future__ import annotations

import hflite
from hflite import analytics, data


def test_the_top_level_names_are_pinned():
    assert sorted(hflite.__all__) == ["ConfigError", "Settings", "__version__", "load_settings"]
    assert hflite.load_settings is hflite.config.load_settings


def test_the_data_package_names_are_pinned():
    assert "Store" in data.__all__ and "ensure_sample" in data.__all__


def test_the_analytics_package_names_are_pinned():
    assert {"compute_metrics", "write_report", "summary_table"} <= set(analytics.__all__)


def test_importing_the_engine_does_not_load_configuration_or_storage_libraries():
    import subprocess
    import sys

    code = (
        "import sys, hflite.engine.core, hflite.engine.market; "
        "print(any(m in sys.modules for m in ('duckdb', 'pydantic_settings')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
