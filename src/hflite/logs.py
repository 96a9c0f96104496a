"""Structured logging (structlog over the standard library), configured once by the CLI.

Events are key=value records on stderr (``--log-json`` for one JSON object per line), so the
terminal's tables on stdout stay clean and a run's log can be searched by run id.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "WARNING", json: bool = False) -> None:
    """Route structlog and stdlib logging to stderr at ``level``."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(name)s: %(message)s", force=True)
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # resolve stderr when a logger is made, not now: it may be swapped (tests, embedding apps)
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger; when nothing configured logging yet (library use), warnings and errors only."""
    if not structlog.is_configured():
        configure("WARNING")
    return structlog.get_logger(name)  # type: ignore[no-any-return]
