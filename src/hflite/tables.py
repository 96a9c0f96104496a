"""Terminal tables that stay readable at 80 columns.

A command describes its columns once (:class:`Col`: name, kind, shown by default or only with
``--wide``) and hands over rows as mappings keyed by column name::

    COLS = [Col("id", "id"), Col("test_start", "date"), Col("n_test", "count"),
            Col("auc", "number"), Col("note", "text", default=False)]
    print_table(console, COLS, frame.to_dict("records"), wide=wide, title="models")

Kinds: ``id`` and ``date``/``time`` never wrap (a date prints as ``YYYY-MM-DD``, a time as UTC
``YYYY-MM-DD HH:MM``); ``count`` prints as a whole number and ``number`` with ``digits`` decimals, both
right-aligned; only ``text`` (free text such as messages) folds, never narrower than its header.
Without ``wide`` the table shows the default columns, drops from the right those that do not fit the
width and names how many are hidden in a caption; with ``wide`` it shows every column at its full
width, wider than the terminal if need be. Cells are plain text (``[llm]`` prints as written); pass a
:class:`rich.text.Text` to style one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["Col", "Kind", "build_table", "cell", "print_table"]

Kind = Literal["id", "date", "time", "count", "number", "text"]
MISSING = "—"
_RIGHT = ("count", "number")


@dataclass(frozen=True)
class Col:
    """One column: its header (also the row key), how its values print, and whether it shows by
    default (``False``: only with ``--wide``)."""

    name: str
    kind: Kind = "text"
    default: bool = True
    digits: int = 3


def cell(value: Any, kind: Kind = "text", digits: int = 3) -> str:
    """``value`` as a column of ``kind`` prints it; missing values (None, NaN, NaT) as a dash."""
    if _missing(value):
        return MISSING
    if kind in ("date", "time"):
        when = _when(value)
        if when is None:
            return str(value)
        if kind == "time" and isinstance(when, datetime):
            return f"{when:%Y-%m-%d %H:%M}"
        return f"{when:%Y-%m-%d}"
    if kind == "count" and not isinstance(value, str):
        return str(round(float(value)))
    if kind == "number" and not isinstance(value, str):
        return f"{float(value):.{digits}f}"
    return str(value)


def build_table(
    cols: Sequence[Col],
    rows: Iterable[Mapping[str, Any]],
    *,
    wide: bool = False,
    width: int | None = None,
    title: str | None = None,
) -> Table:
    """A rich Table of ``rows``: every column when ``wide`` (at its full width), else the default
    columns that fit ``width`` (dropped from the right, never the first) and a caption counting the rest."""
    shown = [c for c in cols if wide or c.default]
    texts = [[_text(row.get(c.name), c) for c in shown] for row in rows]
    if not wide and width is not None:
        while len(shown) > 1 and _width(shown, texts, minimum=True) > width:
            drop = _drop_index(shown)
            shown = shown[:drop] + shown[drop + 1 :]
            texts = [t[:drop] + t[drop + 1 :] for t in texts]
    hidden = len(cols) - len(shown)
    caption = None if wide or not hidden else f"{hidden} more column{'s' if hidden > 1 else ''}: --wide"
    table = Table(title=title, caption=caption, width=_width(shown, texts) if wide else None)
    for c in shown:
        table.add_column(
            c.name,
            justify="right" if c.kind in _RIGHT else "left",
            no_wrap=c.kind != "text",
            overflow="fold",
            min_width=len(c.name) if c.kind == "text" else None,
        )
    for t in texts:
        table.add_row(*t)
    return table


def print_table(
    console: Console,
    cols: Sequence[Col],
    rows: Iterable[Mapping[str, Any]],
    *,
    wide: bool = False,
    title: str | None = None,
) -> None:
    """Build the table for the console's width and print it (uncropped: a wide table keeps its lines)."""
    console.print(build_table(cols, rows, wide=wide, width=console.width, title=title), crop=False)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    try:
        return bool(value != value)  # NaT, numpy NaN
    except (TypeError, ValueError):
        return False


def _when(value: Any) -> date | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo is not None else value
    return value if isinstance(value, date) else None


def _text(value: Any, col: Col) -> Text:
    return value if isinstance(value, Text) else Text(cell(value, col.kind, col.digits))


def _width(cols: Sequence[Col], texts: Sequence[Sequence[Text]], *, minimum: bool = False) -> int:
    """The table's width with each column at its widest cell (``minimum``: free text at its header)."""
    total = len(cols) + 1  # the borders
    for i, c in enumerate(cols):
        widest = len(c.name)
        if not (minimum and c.kind == "text"):
            widest = max([widest, *(t[i].cell_len for t in texts)])
        total += widest + 2  # the padding
    return total


def _drop_index(cols: Sequence[Col]) -> int:
    """The column to drop first: the rightmost that does not fold (folding ones shrink instead)."""
    rest = range(len(cols) - 1, 0, -1)
    return next((i for i in rest if cols[i].kind != "text"), len(cols) - 1)
