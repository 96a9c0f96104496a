"""The README's strategy table: every shipped strategy through ``hflite validate`` on the embedded sample.

    .venv/bin/python scripts/strategy_table.py            # or: make strategy-table

For each row it runs the validation (and, for the optimised row, first an ``hflite optimize`` study on
the research window only), writes each report under ``reports/strategy-table/<row>/`` and prints the
markdown table the README quotes. 2023-01-01 onwards is held out of every optimisation and every test;
the "hold-out" columns are that period, traded once at the end.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hflite.config import load_settings
from hflite.engine.run import open_store
from hflite.lab.optimize import run_study
from hflite.lab.space import parse_space
from hflite.lab.trial import DEFAULT_HOLDOUT, before_holdout
from hflite.lab.validate import EQUAL_WEIGHT, Validation, validate
from hflite.lab.validate_report import write_validation

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "reports" / "strategy-table"

#: (row label, config, search space for an optimised row or None)
ROWS: list[tuple[str, str, list[str] | None]] = [
    ("Trend, EMA 20/100 (demo)", "configs/demo.toml", None),
    ("Trend, optimised on 2018-2022 (200 TPE trials)", "configs/demo.toml", ["fast=5..50", "slow=20..200"]),
    ("Time-series momentum, vol-targeted", "configs/tsmom.toml", None),
    ("Cross-sectional momentum", "configs/xsmom.toml", None),
    ("AI ensemble", "configs/ai.toml", None),
]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def run_row(label: str, config: str, space: list[str] | None, slug: str) -> Validation:
    settings = load_settings(ROOT / config)
    store = open_store(settings)
    study = None
    if space is not None:
        res = run_study(
            before_holdout(settings, DEFAULT_HOLDOUT),
            parse_space(space),
            n_trials=200,
            storage="memory",
            study_name=slug,
            store=store,
            seed=0,
            holdout=DEFAULT_HOLDOUT,
        )
        study = res.study
    v = validate(settings, store, study=study, paths=1000, seed=0)
    write_validation(v, OUT / slug)
    return v


def row(label: str, v: Validation) -> str:
    m, h = v.metrics, v.holdout_metrics or {}
    hb = v.holdout_bench
    spy = next((b for n, b in hb.items() if n.startswith("SPY")), {})
    btc = next((b for n, b in hb.items() if n.startswith("BTC")), {})
    ew = hb.get(EQUAL_WEIGHT, {})
    f = lambda d, k: d.get(k) if d and d.get(k) == d.get(k) else None  # noqa: E731 - NaN -> None
    return (
        f"| {label} | {_num(f(m, 'sharpe'))} | {_num(v.cpcv.median if v.cpcv else None)} | "
        f"{_num(f(h, 'sharpe'))} | {_num(f(h, 'calmar'))} | {_pct(f(h, 'max_drawdown'))} | "
        f"{_pct(f(m, 'max_drawdown'))} | {_num(v.dsr.dsr if v.dsr else None)} | "
        f"{_num(v.pbo.pbo if v.pbo else None)} | {_num(f(spy, 'sharpe'))} / {_num(f(btc, 'sharpe'))} / "
        f"{_num(f(ew, 'sharpe'))} | {v.verdict[1].split(':')[0]} |"
    )


HEADER = (
    "| Strategy | Sharpe, research window | CPCV median OOS Sharpe | Hold-out Sharpe | Hold-out Calmar | "
    "Hold-out max DD | Research max DD | Deflated Sharpe | PBO | Hold-out Sharpe of SPY / BTC / equal weight "
    "B&H | Verdict |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> int:
    lines = [HEADER]
    for label, config, space in ROWS:
        slug = label.split(",")[0].lower().replace(" ", "-") + ("-optimised" if space else "")
        t0 = time.perf_counter()
        v = run_row(label, config, space, slug)
        print(f"{label}: {v.verdict[1]} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        lines.append(row(label, v))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
