"""One redaction layer for every secret the process holds: log lines, exception messages, reports.

A ``Redactor`` knows two things. The secrets themselves: the values of the environment variables that
hold keys (read when logging is configured, after ``.env`` is loaded) and every key a provider or LLM
backend is built with (they ``register`` it). And the shapes credentials travel in: vendors' key
parameters (``api_key``, ``apikey``, ``apiKey``, ``token``, ``key``, ``signature``, ...) in URLs and
``name=value`` text, credential headers (``Authorization``, ``X-Api-Key``, ...), ``Bearer`` tokens and the
``user:password@`` part of URLs. Whatever matches is replaced by ``***``.

Values shorter than ``MIN_SECRET_CHARS`` are not registered (masking every "abc" in a log would hide too
much); the shapes above still mask them.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MASK",
    "MIN_SECRET_CHARS",
    "SECRET_ENV_VARS",
    "Redactor",
    "clear",
    "default",
    "is_secret_name",
    "redact",
    "register",
    "register_environment",
    "sanitize_url",
]

MASK = "***"
#: Shorter values are not masked as literals (too many false positives); their shapes still are.
MIN_SECRET_CHARS = 6
#: The variables the providers and LLM backends read their keys from (``.env`` works too).
SECRET_ENV_VARS: tuple[str, ...] = (
    "FRED_API_KEY",
    "ALPHAVANTAGE_API_KEY",
    "POLYGON_API_KEY",
    "FINNHUB_API_KEY",
    "NEWSAPI_KEY",
    "OANDA_API_TOKEN",
    "COINGECKO_API_KEY",
    "HFLITE_LLM__OPENAI__API_KEY",
    "OPENAI_API_KEY",
    "OLLAMA_API_KEY",
    "HFLITE_BROKER_KEY_ID",  # a broker's key id (its secret ends in _SECRET)
    "APCA_API_KEY_ID",
)
#: Any other variable whose name ends like this holds a secret too (a broker's token, a CCXT secret).
_SECRET_ENV_SUFFIX = re.compile(
    r"(?:API_?KEY|ACCESS_?KEY|SECRET(?:_?KEY)?|PRIVATE_?KEY|TOKEN|PASSWORD|PASSWD|PASSPHRASE)$", re.IGNORECASE
)

# Names are compared lower-cased without "-" and "_": api_key, apiKey, api-key and X-Api-Key all match.
_EXACT = frozenset({"key", "sig", "pwd", "cookie", "setcookie"})
_SUFFIXES = (
    "apikey",
    "token",
    "secret",
    "secretkey",
    "accesskey",
    "privatekey",
    "password",
    "passwd",
    "passphrase",
    "signature",
    "authorization",
)
#: Bare ``key`` is a secret in a URL query (Google-style ``?key=``) but too common a word elsewhere.
_QUERY_ONLY = frozenset({"key"})

_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s\"'<>`]+")
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#@\s]*@")
# name=value, as in a query string or a structlog console line; the value ends at & or whitespace.
_ASSIGNED = re.compile(r"(?<![\w-])([A-Za-z][\w-]*)(=)([\"']?)([^\s\"'&<>#]+)")
# name: value, as in headers, JSON and Python reprs (quotes optional); an auth scheme word is kept.
_COLON = re.compile(
    r"(?<![\w-])([\"']?)([A-Za-z][\w-]*)\1(\s*:\s*)([\"']?)((?:bearer|basic|token|digest)\s+)?([^\s\"',;}\]]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?!\*\*\*)[^\s\"',;}\]]+")


def is_secret_name(name: str, *, in_query: bool = False) -> bool:
    """Whether a parameter, header or field called ``name`` carries a secret."""
    norm = name.lower().replace("-", "").replace("_", "")
    if norm in _QUERY_ONLY:
        return in_query
    return norm in _EXACT or norm.endswith(_SUFFIXES)


def _plain(value: Any) -> str | None:
    """The text of a secret given as a string or as a pydantic ``SecretStr``."""
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    text = getter() if callable(getter) else value
    return text if isinstance(text, str) else None


class Redactor:
    """Registered secrets and credential shapes, masked as ``***`` in any text. Thread-safe."""

    def __init__(self, min_secret_chars: int = MIN_SECRET_CHARS) -> None:
        self.min_secret_chars = min_secret_chars
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def register(self, value: Any) -> bool:
        """Mask ``value`` (a string or ``SecretStr``) from now on; False when empty or too short."""
        text = _plain(value)
        if text is None:
            return False
        text = text.strip()
        if len(text) < self.min_secret_chars:
            return False
        with self._lock:
            if text not in self._secrets:
                self._secrets.add(text)
                longest_first = sorted(self._secrets, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(s) for s in longest_first))
        return True

    def register_environment(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """Register the values of the key variables in ``environ`` (default: ``os.environ``); their names."""
        env = os.environ if environ is None else environ
        names = [n for n in env if n in SECRET_ENV_VARS or _SECRET_ENV_SUFFIX.search(n)]
        return sorted(n for n in names if self.register(env[n]))

    def clear(self) -> None:
        """Forget every registered secret (tests)."""
        with self._lock:
            self._secrets.clear()
            self._pattern = None

    def __len__(self) -> int:
        return len(self._secrets)

    def redact(self, text: str) -> str:
        """``text`` with registered secrets, credential parameters, headers and URL userinfo masked."""
        if not text:
            return text
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        text = _URL.sub(lambda m: self._url(m.group(0)), text)
        text = _ASSIGNED.sub(_mask_assigned, text)
        text = _COLON.sub(_mask_colon, text)
        return _BEARER.sub(r"\1" + MASK, text)

    def sanitize_url(self, url: str) -> str:
        """``url`` with its ``user:password@`` part and the values of key parameters replaced by ``***``."""
        pattern = self._pattern
        if pattern is not None:
            url = pattern.sub(MASK, url)
        return self._url(url)

    @staticmethod
    def _url(url: str) -> str:
        url = _USERINFO.sub(r"\1" + MASK + "@", url)
        head, sep, rest = url.partition("?")
        if not sep:
            return url
        query, hash_, fragment = rest.partition("#")
        params = []
        for part in query.split("&"):
            name, eq, _ = part.partition("=")
            params.append(f"{name}={MASK}" if eq and is_secret_name(name, in_query=True) else part)
        return f"{head}?{'&'.join(params)}{hash_}{fragment}"


def _mask_assigned(m: re.Match[str]) -> str:
    name, eq, quote, _ = m.groups()
    return f"{name}{eq}{quote}{MASK}" if is_secret_name(name, in_query=True) else m.group(0)


def _mask_colon(m: re.Match[str]) -> str:
    quote, name, sep, vquote, scheme, _ = m.groups()
    if not is_secret_name(name):
        return m.group(0)
    return f"{quote}{name}{quote}{sep}{vquote}{scheme or ''}{MASK}"


_DEFAULT = Redactor()


def default() -> Redactor:
    """The process-wide redactor the logging pipeline, providers and backends share."""
    return _DEFAULT


def register(value: Any) -> bool:
    """Register a secret with the process-wide redactor (cheap; call it wherever a key is read)."""
    return _DEFAULT.register(value)


def register_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """Register the key variables of the environment with the process-wide redactor."""
    return _DEFAULT.register_environment(environ)


def redact(text: str) -> str:
    """``text`` masked by the process-wide redactor."""
    return _DEFAULT.redact(text)


def sanitize_url(url: str) -> str:
    """``url`` masked by the process-wide redactor (userinfo, key parameters, registered secrets)."""
    return _DEFAULT.sanitize_url(url)


def clear() -> None:
    """Forget the process-wide redactor's secrets (tests)."""
    _DEFAULT.clear()
