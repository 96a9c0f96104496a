"""Structured logging (structlog over the standard library), configured once by the CLI.

Events are key=value records on stderr (``--log-json`` for one JSON object per line), so the
terminal's tables on stdout stay clean and a run's log can be searched by run id. Every line, from
structlog or from a library through the standard library (httpx, httpcore, urllib3, openai, ollama), passes
through ``hflite.redact`` first: no key, token or password reaches stderr (docs/security.md).

A long-running command (``hflite run``) can also keep a rotating file of the same events, one JSON
object per line, redacted the same way: ``enable_file(dir, name, max_mb=..., backups=...)`` writes
``<dir>/<name>.jsonl`` at the configured level, rotated at ``max_mb`` keeping ``backups`` older files.
"""

from __future__ import annotations

import json as _json
import logging
import logging.handlers
import sys
import threading
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
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


class JsonLineFormatter(logging.Formatter):
    """A stdlib formatter writing one redacted JSON object per record (the log file's format); lines the
    structlog pipeline already rendered (``record.hflite_json``) pass through as they are."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "hflite_json", False):
            return str(record.msg)
        line: dict[str, Any] = {
            "event": redact.redact(record.getMessage()),
            "logger": record.name,
            "level": record.levelname.lower(),
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
        }
        if record.exc_info:
            line["exception"] = redact.redact(self.formatException(record.exc_info))
        return redact.redact(_json.dumps(line, ensure_ascii=False, default=repr))


class _FileSink:
    """The rotating JSON-lines file shared by the structlog pipeline and the stdlib root logger."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # held while writing, so disable_file never races a write
        self.handler: logging.handlers.RotatingFileHandler | None = None
        self.renderer = structlog.processors.JSONRenderer(ensure_ascii=False, default=repr)

    def write_event(self, method: str, event_dict: MutableMapping[str, Any]) -> None:
        handler = self.handler
        if handler is None:
            return
        event = structlog.processors.format_exc_info(None, method, dict(event_dict))
        if "exception" in event:
            event["exception"] = redact.redact(str(event["exception"]))
        line = redact.redact(str(self.renderer(None, method, event)))
        level = logging.getLevelName(str(event.get("level", method)).upper())
        record = logging.makeLogRecord(
            {"msg": line, "levelno": level if isinstance(level, int) else logging.INFO, "hflite_json": True}
        )
        with self.lock:
            if self.handler is handler:
                handler.handle(record)


_SINK = _FileSink()


def _tee_to_file(_logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor (after redaction, before the console renderer): the event to the log file."""
    _SINK.write_event(method, event_dict)
    return event_dict


def log_file_path(directory: str | Path, name: str) -> Path:
    """Where ``enable_file`` writes: ``<directory>/<name>.jsonl``."""
    return Path(directory) / f"{name}.jsonl"


def enable_file(directory: str | Path, name: str, *, max_mb: float = 10.0, backups: int = 5) -> Path:
    """Also write every log event (structlog and stdlib) to ``<directory>/<name>.jsonl``, one redacted
    JSON object per line, rotated at ``max_mb`` megabytes keeping ``backups`` older files (``.1``,
    ``.2``...); replaces a file enabled before. Returns the file's path."""
    if not max_mb > 0:
        raise ValueError(f"max_mb must be > 0 (got {max_mb!r})")
    if backups < 1:  # the standard library never rotates with no backups: the file would grow forever
        raise ValueError(f"backups must be >= 1 (got {backups!r})")
    path = log_file_path(directory, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max(1, int(max_mb * 1024 * 1024)), backupCount=backups, encoding="utf-8"
    )
    handler.setFormatter(JsonLineFormatter())
    with _SINK.lock:
        disable_file()
        _SINK.handler = handler
        logging.getLogger().addHandler(handler)
    if not structlog.is_configured():
        configure("WARNING")
    return path


def disable_file() -> None:
    """Stop writing the log file (if any) and close it."""
    with _SINK.lock:
        handler, _SINK.handler = _SINK.handler, None
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()


def configure(level: str = "WARNING", json: bool = False) -> None:
    """Route structlog and stdlib logging to stderr at ``level``, redacted; register the environment's
    keys (call it after ``.env`` is loaded)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    redact.register_environment()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(_STDLIB_FORMAT))
    root = logging.getLogger()
    if _SINK.handler is not None:
        root.removeHandler(_SINK.handler)  # basicConfig(force=True) would close it
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
    if _SINK.handler is not None:
        root.addHandler(_SINK.handler)
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
            _tee_to_file,
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
