"""Structured logging (structlog over the standard library), configured once by the CLI.

Events are key=value records on stderr (``--log-json`` for one JSON object per line), so the
terminal's tables on stdout stay clean and a run's log can be searched by run id. Every line, from
structlog or from a library through the standard library (httpx, httpcore, urllib3, openai, ollama), passes
through ``hflite.redact`` first: no key, token or password reaches stderr (docs/security.md).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from hflite import redact

_STDLIB_FORMAT = "%(name)s: %(message)s"


class RedactingFormatter(logging.Formatter):
    """A stdlib formatter whose whole output (message, arguments, traceback) goes through the redactor."""

    def format(self, record: logging.LogRecord) -> str:
        return redact.redact(super().format(record))


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return redact.redact(value)
    if isinstance(value, dict):
        return {k: redact.MASK if _secret_field(k, v) else _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_masked(v) for v in value)
    return value


def _secret_field(name: Any, value: Any) -> bool:
    return isinstance(name, str) and value is not None and redact.is_secret_name(name)


def redact_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: every string value redacted, and fields named like a secret masked outright."""
    for name, value in list(event_dict.items()):
        if name == "exc_info":
            continue  # rendered by the renderer, then redacted by ``redact_rendered``
        event_dict[name] = redact.MASK if _secret_field(name, value) else _masked(value)
    return event_dict


def redact_rendered(_logger: Any, _method: str, rendered: Any) -> Any:
    """structlog processor after the renderer: the finished line (``str`` or ``bytes``, tracebacks
    included) redacted."""
    if isinstance(rendered, bytes):
        return redact.redact(rendered.decode("utf-8", "replace")).encode("utf-8")
    return redact.redact(rendered)


def configure(level: str = "WARNING", json: bool = False) -> None:
    """Route structlog and stdlib logging to stderr at ``level``, redacted; register the environment's
    keys (call it after ``.env`` is loaded)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    redact.register_environment()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(_STDLIB_FORMAT))
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
    renderer = (
        structlog.processors.JSONRenderer()
        if json
        # plain tracebacks: rich ones print local variables (keys among them) and split text with colours
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_event,
            renderer,
            redact_rendered,
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
