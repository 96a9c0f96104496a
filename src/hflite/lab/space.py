"""Search spaces: ``--param fast=5..50`` and friends, parsed into Optuna distributions.

A parameter is a dotted config key (``strategy.fast``, ``risk.risk_pct``,
``strategy.by_regime.bear.fast``); a bare name means ``strategy.<name>``. The right-hand side is:

- ``lo..hi``: integers when both ends are integers, floats otherwise;
- ``lo..hi:step``: a stepped range (``0.25..1.5:0.25``);
- ``lo..hi:log``: a log-uniform range (both ends > 0);
- ``a,b,c``: a categorical choice (TOML-typed: ``sma,ema``, ``true,false``, ``10,20,50``).

Values are checked here (an empty or reversed range is one line naming the parameter); whether a value
is valid for the strategy is checked when a trial builds its config, and an invalid combination (for
example ``fast >= slow``) is pruned, never run.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from hflite.config import ConfigError


@dataclass(frozen=True, slots=True)
class Param:
    """One searched parameter: its config key and its Optuna distribution."""

    key: str
    dist: BaseDistribution

    @property
    def name(self) -> str:
        """The short name shown in tables and plots (``fast``, ``risk.risk_pct``)."""
        return self.key.removeprefix("strategy.")

    def bounds(self) -> tuple[Any, Any] | None:
        d = self.dist
        if isinstance(d, IntDistribution | FloatDistribution):
            return d.low, d.high
        return None

    def describe(self) -> str:
        d = self.dist
        if isinstance(d, CategoricalDistribution):
            return ", ".join(str(c) for c in d.choices)
        assert isinstance(d, IntDistribution | FloatDistribution)
        extra = " (log)" if d.log else (f" step {d.step}" if d.step not in (None, 1) else "")
        return f"{d.low} .. {d.high}{extra}"


def _value(raw: str, key: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        word = raw.strip()
        if not word:
            raise ConfigError(f"--param {key}: an empty value") from None
        return word


def _number(raw: str, key: str) -> int | float:
    v = _value(raw, key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"--param {key}: {raw.strip()!r} is not a number")
    return v


def parse_param(spec: str) -> Param:
    """``"fast=5..50"`` -> Param("strategy.fast", IntDistribution(5, 50))."""
    if "=" not in spec:
        raise ConfigError(f"--param {spec!r}: expected name=lo..hi or name=a,b,c (e.g. fast=5..50)")
    name, rhs = (s.strip() for s in spec.split("=", 1))
    if not name or any(not p for p in name.split(".")):
        raise ConfigError(f"--param {spec!r}: a parameter needs a name (e.g. fast or risk.risk_pct)")
    key = name if "." in name else f"strategy.{name}"
    if ".." in rhs:
        rng, _, mod = rhs.partition(":")
        lo_raw, _, hi_raw = rng.partition("..")
        lo, hi = _number(lo_raw, key), _number(hi_raw, key)
        if not lo < hi:
            raise ConfigError(f"--param {key}: the range {lo}..{hi} is empty (low must be below high)")
        log = mod.strip() == "log"
        step = None if log or not mod.strip() else _number(mod, key)
        if log and lo <= 0:
            raise ConfigError(f"--param {key}: a log range needs a low above 0, not {lo}")
        if step is not None and not step > 0:
            raise ConfigError(f"--param {key}: the step must be above 0, not {step}")
        if isinstance(lo, int) and isinstance(hi, int) and (step is None or isinstance(step, int)):
            return Param(key, IntDistribution(lo, hi, log=log, step=step or 1))
        if step is not None and (hi - lo) / step < 1:
            raise ConfigError(f"--param {key}: the step {step} is wider than the range {lo}..{hi}")
        return Param(key, FloatDistribution(float(lo), float(hi), log=log, step=step))
    choices = tuple(_value(c, key) for c in rhs.split(","))
    if len(choices) < 2 and not (len(choices) == 1 and choices[0] != ""):
        raise ConfigError(f"--param {key}: give a range lo..hi or at least one choice")
    if len(set(map(repr, choices))) != len(choices):
        raise ConfigError(f"--param {key}: a choice is listed twice")
    return Param(key, CategoricalDistribution(choices))


def parse_space(specs: list[str]) -> list[Param]:
    """Every ``--param``; a key given twice is an error."""
    params = [parse_param(s) for s in specs]
    seen: set[str] = set()
    for p in params:
        if p.key in seen:
            raise ConfigError(f"--param {p.key}: given twice")
        seen.add(p.key)
    if not params:
        raise ConfigError("give at least one --param to search, e.g. --param fast=5..50")
    return params


def overrides_of(values: dict[str, Any]) -> dict[str, Any]:
    """``{"strategy.fast": 20, "risk.risk_pct": 0.5}`` -> the nested dict ``--set`` would give."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def widest(params: list[Param]) -> dict[str, Any]:
    """The value of each numeric parameter that needs the longest warm-up: its high end (lookback
    lengths grow with the value); categoricals keep the config's value."""
    out: dict[str, Any] = {}
    for p in params:
        b = p.bounds()
        if b is not None and isinstance(p.dist, IntDistribution):
            out[p.key] = b[1]
    return out
