"""Alerts: ops events to the user's channels (Telegram, Discord, email, SMS, webhooks) through apprise.

An ``Alerter`` listens on the ``OpsBus``. The trading thread only routes, deduplicates and enqueues (no
I/O, no exception); one worker thread per channel does the sending, so a slow or failing channel never
delays trading nor another channel. Each channel is one apprise URL read from the environment (``.env``)
by the name in ``[alerts].channels[].url_env``: the URL holds tokens, so it never appears in a log line,
an exception or a file (it is registered with ``hflite.redact`` before apprise sees it).

Delivery: one attempt is limited to ``timeout_s`` (apprise's ``cto``/``rto`` URL arguments and the
call's own deadline); a failed attempt is retried ``retries`` times with exponential backoff and jitter
(tenacity); a channel sends at most ``per_minute`` alerts a minute (the excess waits, it is not dropped);
the queue keeps ``queue_max`` alerts per channel and drops the oldest beyond. ``stats()`` counts it all.
"""

from __future__ import annotations

import inspect
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import apprise
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    stop_any,
    stop_when_event_set,
    wait_exponential,
    wait_random,
)

from hflite import logs, redact
from hflite.config import AlertChannelConfig, AlertsConfig, ConfigError
from hflite.ops.events import OpsEvent

__all__ = [
    "AlertConfigError",
    "Alerter",
    "Delivery",
    "channel_service",
    "channel_url",
    "format_alert",
    "send_test",
    "with_timeouts",
]

_log = logs.get("hflite.ops.alerts")

#: The apprise notification type of each level (it picks the colour or icon a service shows).
NOTIFY_TYPES: dict[str, apprise.NotifyType] = {
    "info": apprise.NotifyType.INFO,
    "warning": apprise.NotifyType.WARNING,
    "critical": apprise.NotifyType.FAILURE,
}
#: The longest backoff between two attempts, whatever ``retry_base_s`` and the attempt number.
MAX_BACKOFF_S = 300.0
#: Field lines appended to an alert's body at most (a daily summary's anomalies list stays readable).
MAX_FIELD_LINES = 20
#: Remembered dedup keys beyond which the expired ones are forgotten.
_DEDUP_PRUNE_AT = 4096
#: apprise 2 bounds a whole ``notify`` call (``timeout=``); before, only the URL's cto/rto bound it.
_NOTIFY_HAS_TIMEOUT = "timeout" in inspect.signature(apprise.Apprise.notify).parameters
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_\-:+=%~]+$")


class AlertConfigError(ConfigError):
    """An alert channel that cannot work: its variable is unset or holds a URL apprise refuses."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """The final outcome of one alert on one channel."""

    ok: bool
    attempts: int
    error: str = ""


@dataclass(slots=True)
class _Counts:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    deduped: int = 0
    dropped: int = 0
    delayed: int = 0
    last_error: str = ""


# -- channel set-up ------------------------------------------------------------------------------------


def _token_like(part: str) -> bool:
    """Whether one piece of a URL looks like a credential (an id or token), not a host, word or port."""
    if "." in part or "@" in part or not _TOKEN_CHARS.match(part):
        return False
    return len(part) >= 8 and (any(c.isdigit() for c in part) or len(part) >= 16)


def _secret_parts(url: str) -> list[str]:
    """The parts of an apprise URL that carry credentials: its password, and every token-like host,
    path segment, user or query value (a Discord webhook id and token, a bot token, an SID...)."""
    _, _, rest = url.partition("://")
    rest = rest.split("#", 1)[0]
    location, _, query = rest.partition("?")
    parts: list[str] = []
    userinfo, at, hostpath = location.rpartition("@")
    if at:
        user, _, password = userinfo.partition(":")
        parts.append(unquote(password))
        if _token_like(user):
            parts.append(unquote(user))
    for segment in hostpath.split("/"):
        for piece in (segment, *segment.split(":")):
            if _token_like(unquote(piece)):
                parts.append(unquote(piece))
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        value = unquote(value)
        if value and (redact.is_secret_name(name, in_query=True) or _token_like(value)):
            parts.append(value)
    return [p for p in parts if p]


def _register_secrets(url: str) -> None:
    redact.register(url)
    for part in _secret_parts(url):
        redact.register(part)


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://" if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme) else ""


def with_timeouts(url: str, timeout_s: float) -> str:
    """``url`` with apprise's connect (``cto``) and read (``rto``) timeouts set to ``timeout_s`` where the
    URL does not set them itself (apprise's URL arguments; every plugin accepts them)."""
    head, hash_, fragment = url.partition("#")
    extra = [f"{arg}={timeout_s:g}" for arg in ("cto", "rto") if not re.search(rf"[?&]{arg}=", head)]
    if not extra:
        return url
    joiner = "&" if "?" in head else "?"
    if head.endswith(("?", "&")):
        joiner = ""
    return f"{head}{joiner}{'&'.join(extra)}{hash_}{fragment}"


def channel_url(channel: AlertChannelConfig, env: Mapping[str, str]) -> str:
    """The channel's apprise URL from ``env``, registered as a secret; ``AlertConfigError`` (naming the
    channel and the variable, never the value) when it is unset or apprise refuses it."""
    url = (env.get(channel.url_env) or "").strip()
    if not url:
        raise AlertConfigError(
            f"alert channel {channel.name!r}: the variable {channel.url_env} is not set "
            "(put the channel's apprise URL in the environment or .env; see docs/alerts.md)"
        )
    _register_secrets(url)
    scheme = _scheme(url)
    if not scheme:
        raise AlertConfigError(
            f"alert channel {channel.name!r}: {channel.url_env} does not hold a URL "
            "(an apprise URL looks like discord://webhook_id/webhook_token; see docs/alerts.md)"
        )
    if not apprise.Apprise().add(url):
        raise AlertConfigError(
            f"alert channel {channel.name!r}: {channel.url_env} holds a {scheme} URL apprise does not "
            "accept (wrong form or unknown service; see docs/alerts.md and appriseit.com)"
        )
    return url


def channel_service(channel: AlertChannelConfig, env: Mapping[str, str]) -> str:
    """The apprise service name of the channel's URL ("Discord", "E-Mail"...), for listings; raises
    ``AlertConfigError`` like ``channel_url``."""
    url = channel_url(channel, env)
    plugin = apprise.Apprise.instantiate(url)
    return str(getattr(plugin, "service_name", "") or _scheme(url))


def _apprise_for(url: str, timeout_s: float) -> apprise.Apprise:
    asset = apprise.AppriseAsset(app_id="hflite", app_desc="HedgeFund-Lite alerts", storage_mode="memory")
    apobj = apprise.Apprise(asset=asset)
    if not apobj.add(with_timeouts(url, timeout_s)):  # the timeouts are valid arguments of every plugin
        apobj = apprise.Apprise(asset=asset)
        apobj.add(url)
    return apobj


# -- what is sent --------------------------------------------------------------------------------------


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _field_text(value: Any) -> str:
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def format_alert(ev: OpsEvent, run_id: str = "") -> tuple[str, str]:
    """The title (``[hflite <run_id>] <LEVEL> <title>``) and plain-text body of one alert, redacted."""
    rid = ev.run_id or run_id
    prefix = f"[hflite {rid}]" if rid else "[hflite]"
    title = f"{prefix} {str(ev.level).upper()} {ev.title}"
    lines = [ev.body or ev.title, "", f"kind: {ev.kind}"]
    if ev.bar_ts is not None:
        lines.append(f"bar: {_iso(ev.bar_ts / 1e9)}")
    lines.append(f"at: {_iso(ev.ts)}")
    items = list(ev.fields.items())
    lines += [f"{name}: {_field_text(value)}" for name, value in items[:MAX_FIELD_LINES]]
    if len(items) > MAX_FIELD_LINES:
        lines.append(f"(+{len(items) - MAX_FIELD_LINES} more fields)")
    return redact.redact(title), redact.redact("\n".join(lines))


def _failure_text(result: Any) -> str:
    """Why an apprise call failed, from the log lines it captured (warnings and errors)."""
    status = getattr(getattr(result, "status", None), "name", "")
    messages: list[str] = []
    try:
        messages = [
            entry.message
            for entry in result.logs()
            if entry.level in ("WARNING", "ERROR", "CRITICAL") and entry.message
        ]
    except (AttributeError, TypeError):
        messages = []
    text = "; ".join(dict.fromkeys(messages[-3:]))
    if status == "TIMEOUT":
        text = f"timed out{': ' + text if text else ''}"
    return redact.redact(text or f"delivery failed ({status.lower() or 'no result'})")


class _Channel:
    """One configured channel: its apprise object, queue, rate window and counters."""

    def __init__(self, config: AlertChannelConfig, url: str, alerts: AlertsConfig) -> None:
        self.config = config
        self.name = config.name
        self.alerts = alerts
        self.apobj = _apprise_for(url, alerts.timeout_s)
        # apprise spaces two requests of one service by its ``request_rate_per_sec`` (5.5 s for email and
        # most APIs): that wait happens inside an attempt, so the attempt's deadline allows for it.
        paces = [float(getattr(service, "request_rate_per_sec", 0) or 0) for service in self.apobj]
        self.pacing_s = max(paces, default=0.0)
        self.attempt_timeout_s = alerts.timeout_s + self.pacing_s
        for service in self.apobj:
            host = str(getattr(service, "smtp_host", "") or "")
            if getattr(service, "secure_mode", None) == "insecure" and host not in _LOOPBACK:
                _log.warning(
                    "alert.email_without_tls", channel=self.name, smtp_host=host, hint="use mailtos://"
                )
        self.cond = threading.Condition()
        self.queue: deque[OpsEvent] = deque()
        self.dropped_pending: deque[OpsEvent] = deque(maxlen=alerts.queue_max)
        self.inflight: OpsEvent | None = None
        self.counts = _Counts()
        self.sent_at: deque[float] = deque()  # monotonic start times of the sends in the rate window
        self.thread: threading.Thread | None = None

    def wants(self, ev: OpsEvent) -> bool:
        return ev.level in self.config.levels and (not self.config.kinds or ev.kind in self.config.kinds)

    def attempt(self, title: str, body: str, notify_type: apprise.NotifyType) -> Delivery:
        """One apprise call within ``timeout_s``; never raises."""
        deadline: dict[str, Any] = {"timeout": self.attempt_timeout_s} if _NOTIFY_HAS_TIMEOUT else {}
        try:
            result = self.apobj.notify(
                body=body,
                title=title,
                notify_type=notify_type,
                body_format=apprise.NotifyFormat.TEXT,
                **deadline,
            )
        except Exception as exc:  # a plugin bug must not kill the worker
            return Delivery(False, 1, redact.redact(f"{type(exc).__name__}: {exc}"))
        if result:
            return Delivery(True, 1)
        return Delivery(False, 1, _failure_text(result))

    def deliver(
        self,
        ev: OpsEvent,
        run_id: str,
        *,
        stop: threading.Event | None = None,
    ) -> Delivery:
        """Send ``ev`` with retries (exponential backoff with jitter), logging each outcome; ``stop``
        set ends the backoff waits and the retries (shutdown)."""
        stop = stop or threading.Event()
        title, body = format_alert(ev, run_id)
        notify_type = NOTIFY_TYPES[str(ev.level)]
        base = self.alerts.retry_base_s

        def pause(seconds: float) -> None:
            stop.wait(seconds)  # a backoff that shutdown cuts short

        def before_sleep(state: RetryCallState) -> None:
            last = state.outcome.result() if state.outcome is not None else None
            error = last.error if isinstance(last, Delivery) else ""
            with self.cond:
                self.counts.retried += 1
            _log.warning(
                "alert.retry",
                channel=self.name,
                kind=ev.kind,
                dedup_key=ev.dedup_key,
                attempt=state.attempt_number,
                wait_s=round(state.upcoming_sleep, 3),
                error=error,
            )

        retrying = Retrying(
            stop=stop_any(stop_after_attempt(self.alerts.retries + 1), stop_when_event_set(stop)),
            wait=wait_exponential(multiplier=base, max=max(base, MAX_BACKOFF_S)) + wait_random(0, base),
            retry=retry_if_result(lambda d: not d.ok),
            sleep=pause,
            before_sleep=before_sleep,
            retry_error_callback=lambda s: s.outcome.result() if s.outcome is not None else None,
        )
        attempts = 0

        def one_attempt() -> Delivery:
            nonlocal attempts
            attempts += 1
            return self.attempt(title, body, notify_type)

        outcome: Delivery = retrying(one_attempt)
        final = Delivery(outcome.ok, attempts, outcome.error)
        with self.cond:
            if final.ok:
                self.counts.sent += 1
            else:
                self.counts.failed += 1
                self.counts.last_error = final.error
        if final.ok:
            _log.info(
                "alert.sent", channel=self.name, kind=ev.kind, dedup_key=ev.dedup_key, attempts=attempts
            )
        else:
            _log.error(
                "alert.failed",
                channel=self.name,
                kind=ev.kind,
                dedup_key=ev.dedup_key,
                attempts=attempts,
                error=final.error,
            )
        return final


def _build_channels(config: AlertsConfig, env: Mapping[str, str]) -> list[_Channel]:
    return [_Channel(c, channel_url(c, env), config) for c in config.channels]


# -- the listener --------------------------------------------------------------------------------------


class Alerter:
    """The ``OpsBus`` listener that sends alerts: ``bus.subscribe(alerter)``, ``alerter.close()`` at exit.

    ``record`` (optional) is called from a worker thread with one dict per final outcome (``sent``,
    ``failed``, ``dropped`` when the queue overflowed, ``undelivered`` at close): the journal's writer.
    ``rate_window_s`` is the rate limit's window (``per_minute`` alerts per 60 s; tests shorten it).
    """

    def __init__(
        self,
        config: AlertsConfig,
        env: Mapping[str, str],
        run_id: str = "",
        *,
        record: Callable[[dict[str, Any]], None] | None = None,
        rate_window_s: float = 60.0,
    ) -> None:
        if rate_window_s <= 0:
            raise ValueError(f"rate_window_s must be > 0 (got {rate_window_s!r})")
        self.config = config
        self.run_id = run_id
        self.record = record
        self.rate_window_s = rate_window_s
        self.channels: list[_Channel] = _build_channels(config, env) if config.enabled else []
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._closing = False
        self._closed: int | None = None
        self._stop = threading.Event()  # set at close's deadline: waits end, nothing more is sent
        for ch in self.channels:
            ch.thread = threading.Thread(
                target=self._work, args=(ch,), name=f"hflite-alert-{ch.name}", daemon=True
            )
            ch.thread.start()
        if self.channels:
            _log.info("alerts.started", channels=[c.name for c in self.channels], run_id=run_id)

    # -- on the trading thread: route, dedup, enqueue ---------------------------------------------------

    def __call__(self, ev: OpsEvent) -> None:
        """Queue ``ev`` for the channels that take it; returns at once and never raises."""
        try:
            self._accept(ev)
        except Exception as exc:  # a listener never stops trading
            _log.warning("alert.listener_failed", kind=getattr(ev, "kind", "?"), error=str(exc))

    def _accept(self, ev: OpsEvent) -> None:
        if self._closing or not self.channels or not ev.alertable:
            return
        if ev.kind == "fill" and not self.config.fills:
            return
        targets = [ch for ch in self.channels if ch.wants(ev)]
        if not targets:
            return
        if self._duplicate(ev.dedup_key):
            for ch in targets:
                with ch.cond:
                    ch.counts.deduped += 1
            return
        for ch in targets:
            with ch.cond:
                if len(ch.queue) >= self.config.queue_max:
                    ch.dropped_pending.append(ch.queue.popleft())
                    ch.counts.dropped += 1
                ch.queue.append(ev)
                ch.cond.notify()

    def _duplicate(self, key: str) -> bool:
        window = self.config.dedup_s
        if window <= 0:
            return False
        now = time.monotonic()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last < window:
                return True
            self._seen[key] = now
            if len(self._seen) > _DEDUP_PRUNE_AT:
                self._seen = {k: t for k, t in self._seen.items() if now - t < window}
        return False

    # -- on each channel's worker thread ------------------------------------------------------------------

    def _work(self, ch: _Channel) -> None:
        while True:
            with ch.cond:
                while not ch.queue and not self._closing:
                    ch.cond.wait()
                dropped = list(ch.dropped_pending)
                ch.dropped_pending.clear()
                ev = None if self._stop.is_set() or not ch.queue else ch.queue.popleft()
                ch.inflight = ev
            self._report_dropped(ch, dropped)
            if ev is None:
                return
            try:
                self._send(ch, ev)
            except Exception as exc:  # the worker outlives any bug in one delivery
                _log.error("alert.worker_error", channel=ch.name, kind=ev.kind, error=redact.redact(str(exc)))
            finally:
                with ch.cond:
                    ch.inflight = None

    def _send(self, ch: _Channel, ev: OpsEvent) -> None:
        self._wait_for_rate(ch)
        if self._stop.is_set():
            with ch.cond:
                ch.queue.appendleft(ev)  # undelivered: close counts and records it
            return
        outcome = ch.deliver(ev, self.run_id, stop=self._stop)
        self._record(ch, ev, "sent" if outcome.ok else "failed", outcome.attempts, outcome.error)

    def _wait_for_rate(self, ch: _Channel) -> None:
        """Block until the channel may send one more alert within ``per_minute`` per window."""
        limit, window = self.config.per_minute, self.rate_window_s
        delayed = False
        while not self._stop.is_set():
            now = time.monotonic()
            while ch.sent_at and now - ch.sent_at[0] >= window:
                ch.sent_at.popleft()
            if len(ch.sent_at) < limit:
                ch.sent_at.append(now)
                return
            if not delayed:
                delayed = True
                with ch.cond:
                    ch.counts.delayed += 1
                _log.info("alert.rate_limited", channel=ch.name, per_window=limit, window_s=window)
            self._stop.wait(ch.sent_at[0] + window - now)

    def _report_dropped(self, ch: _Channel, dropped: list[OpsEvent]) -> None:
        if not dropped:
            return
        _log.warning("alert.dropped", channel=ch.name, count=len(dropped), queue_max=self.config.queue_max)
        for ev in dropped:
            self._record(ch, ev, "dropped", 0, "queue full: the oldest alert was dropped")

    def _record(self, ch: _Channel, ev: OpsEvent, outcome: str, attempts: int, error: str) -> None:
        if self.record is None:
            return
        title, _ = format_alert(ev, self.run_id)
        row = {
            "channel": ch.name,
            "kind": ev.kind,
            "level": ev.level,
            "title": title,
            "key": ev.dedup_key,
            "outcome": outcome,
            "attempts": attempts,
            "error": error,
        }
        try:
            self.record(row)
        except Exception as exc:  # the journal's trouble is not the channel's
            _log.warning("alert.record_failed", channel=ch.name, kind=ev.kind, error=redact.redact(str(exc)))

    # -- for the lead's metrics and status ------------------------------------------------------------------

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per channel: sent, failed (gave up), retried, deduped, dropped, delayed (rate-limited),
        queued (waiting or being sent) and last_error (redacted)."""
        out: dict[str, dict[str, Any]] = {}
        for ch in self.channels:
            with ch.cond:
                c = ch.counts
                out[ch.name] = {
                    "sent": c.sent,
                    "failed": c.failed,
                    "retried": c.retried,
                    "deduped": c.deduped,
                    "dropped": c.dropped,
                    "delayed": c.delayed,
                    "queued": len(ch.queue) + (ch.inflight is not None),
                    "last_error": c.last_error,
                }
        return out

    def close(self, timeout: float = 5.0) -> int:
        """Send what can be sent within ``timeout`` seconds, then stop the workers; returns how many
        alerts stayed undelivered (queued or cut short), logged and recorded as ``undelivered``."""
        with self._lock:
            if self._closed is not None:
                return self._closed
            self._closing = True
        deadline = time.monotonic() + max(0.0, timeout)
        for ch in self.channels:
            with ch.cond:
                ch.cond.notify_all()
        for ch in self.channels:
            if ch.thread is not None:
                ch.thread.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        for ch in self.channels:
            with ch.cond:
                ch.cond.notify_all()
        for ch in self.channels:
            if ch.thread is not None:
                ch.thread.join(0.2)
        undelivered = 0
        for ch in self.channels:
            with ch.cond:
                left = list(ch.queue)
                ch.queue.clear()
                cut_short = ch.inflight is not None  # its worker records the outcome if it ever ends
            undelivered += len(left) + cut_short
            for ev in left:
                self._record(ch, ev, "undelivered", 0, "not sent before shutdown")
        with self._lock:
            self._closed = undelivered
        if self.channels:
            _log.info("alerts.closed", undelivered=undelivered, stats=self.stats())
        if undelivered:
            _log.warning("alerts.undelivered", count=undelivered, timeout_s=timeout)
        return undelivered


# -- hflite alerts test ----------------------------------------------------------------------------------


def send_test(config: AlertsConfig, env: Mapping[str, str], run_id: str = "") -> list[tuple[str, bool, str]]:
    """Send one ``alert.test`` to every configured channel now (with the retries), whatever its levels
    and kinds; one ``(channel, ok, error)`` row per channel, a misconfigured one included."""
    ev = OpsEvent(
        "alert.test",
        "test alert",
        "A test alert from `hflite alerts test`: this channel works.",
        run_id=run_id,
        key=f"alert.test|{time.time_ns()}",
    )

    def one(channel: AlertChannelConfig) -> tuple[str, bool, str]:
        try:
            ch = _Channel(channel, channel_url(channel, env), config)
        except AlertConfigError as exc:
            return channel.name, False, str(exc)
        outcome = ch.deliver(ev, run_id)
        return channel.name, outcome.ok, outcome.error

    if not config.channels:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(config.channels))) as pool:
        return list(pool.map(one, config.channels))
