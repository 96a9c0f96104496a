"""Strategies: the protocol and the built-ins."""

from hflite.strategy.base import BarArrays, SignalSet, Strategy
from hflite.strategy.builtin import PARAMS, make_strategy

__all__ = ["PARAMS", "BarArrays", "SignalSet", "Strategy", "make_strategy"]
