"""Point-in-time feature tables: technical, cross-asset, macro and sentiment features per symbol.

Pure computations: every row is stamped with the time its bar became known, and reads only data
known at or before that time. Reading the store and caching live in :mod:`hflite.ai.feature_cache`.
"""

from hflite.features._compute import compute_features
from hflite.features._config import FeatureConfig
from hflite.features._inputs import FeatureInputs, bars_per_year, input_warnings, prepare_inputs
from hflite.features._spec import FEATURE_DOCS, FEATURE_GROUPS, FEATURES, FEATURES_VERSION, MACRO_SERIES

__all__ = [
    "FEATURES",
    "FEATURES_VERSION",
    "FEATURE_DOCS",
    "FEATURE_GROUPS",
    "MACRO_SERIES",
    "FeatureConfig",
    "FeatureInputs",
    "bars_per_year",
    "compute_features",
    "input_warnings",
    "prepare_inputs",
]
