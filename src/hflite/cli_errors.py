"""How every ``hflite`` command fails: one ``error:`` line on stderr, then a non-zero exit.

The message is plain text, never rich markup, so a config section such as ``[run]`` or a path with
brackets prints exactly as written; and it is never wrapped, so it stays one line to grep for.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, unwrapped, the message taken literally."""
    line = Text.assemble(("error:", "bold red"), " ", message)
    Console(stderr=True).print(line, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print the error line and exit with ``code`` (2: bad input; 1: the work failed)."""
    print_error(message)
    raise typer.Exit(code)
