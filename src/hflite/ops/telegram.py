"""The Telegram bot: a running session's alerts on a phone, and freqtrade-like commands back.

``TelegramBot`` polls the Bot API (python-telegram-bot's ``Application``) in its own thread with its
own asyncio loop, so neither the trading thread nor the main thread ever waits on Telegram:

- commands from the configured chats only (``[telegram] chat_ids``): ``/status``, ``/positions``,
  ``/pnl``, ``/pause``, ``/resume``, ``/close_all`` and ``/kill`` (both behind a "Yes" button that
  expires), ``/explain <id>``, ``/help``. An update from any other chat is logged
  (``telegram.refused``) and dropped before it reaches the run.
- notifications: the bot is an ``OpsBus`` listener; events at a level in ``notify_levels`` are queued
  (bounded, never blocking the trading thread) and sent to every configured chat by the bot's loop.

Everything the bot reads or queues goes through a ``RunControl`` (``ops.state.RunView`` in a real
run): commands are journaled with ``source="telegram"`` and applied by the runtime at its next bar-time.
Replies are plain text (no ``parse_mode``): text from the run, the user or an LLM cannot inject markup.

The token travels in every URL (``.../bot<TOKEN>/getUpdates``): it is registered with ``hflite.redact``
and every record of the libraries' loggers (telegram, httpx, httpcore) is redacted before any handler
sees it. A Bot API that does not answer (down, 5xx, timeouts) is retried with backoff and never stops
the process; a token the Bot API refuses (401) makes ``start`` raise ``TelegramAuthError`` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ExtBot,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import HTTPXRequest

from hflite import logs, redact
from hflite.config import TelegramConfig
from hflite.ops.events import OpsEvent

__all__ = [
    "COMMANDS",
    "CONFIRM_TTL_S",
    "NOT_LIVE_COMMAND",
    "RunControl",
    "TelegramAuthError",
    "TelegramBot",
    "guard_library_logs",
]

log = logs.get("hflite.ops.telegram")

#: A /kill or /close_all confirmation button works this long (seconds).
CONFIRM_TTL_S = 60.0
#: What a command's reply says when no runtime is live to apply it.
NOT_LIVE_COMMAND = "runtime not running: the command is queued and applies when it resumes"
#: Telegram's limit on a message's text.
MAX_TEXT = 4096
#: The commands the bot answers, with the help line of each (also the phone's command menu).
COMMANDS: tuple[tuple[str, str], ...] = (
    ("status", "the run: runtime, equity, positions, risk"),
    ("positions", "open positions with their P&L"),
    ("pnl", "P&L: total, day, week, month"),
    ("pause", "pause new entries: /pause [reason]"),
    ("resume", "resume trading: /resume [reason]"),
    ("close_all", "close every position (asks to confirm): /close_all [reason]"),
    ("kill", "kill switch: cancel orders, close all, stop entries (asks to confirm): /kill [reason]"),
    ("explain", "a decision's audit trail: /explain <id>"),
    ("help", "this list"),
)
_CONFIRMED = ("close_all", "kill")
_BUTTONS = {"kill": "Yes, kill", "close_all": "Yes, close all"}
_WHAT = {
    "kill": "cancel every working order, close every position and stop new entries until /resume",
    "close_all": "close every position (trading goes on)",
}
_LIBRARY_LOGGERS = ("telegram", "httpx", "httpcore")


class RunControl(Protocol):
    """What the bot needs from a run (``ops.state.RunView`` offers it).

    A view may also offer ``similar_decisions(decision_id: str, n: int) -> list[str]``: the bot then
    suggests up to three ids when ``/explain`` names an unknown one."""

    def status(self) -> dict[str, Any]:
        """run_id, runtime (live|halted|stopped|not running|starting|...), live, halted, bar_ts,
        equity, cash {ccy: amount}, positions, open_orders, risk, risk_reason, venue."""
        ...

    def positions(self) -> list[dict[str, Any]]:
        """symbol, qty, avg_price, last, value, unrealized_pnl (None where unknown)."""
        ...

    def pnl(self) -> dict[str, Any]:
        """equity, initial_cash, total_pnl, total_pct, day_pnl, week_pnl, month_pnl."""
        ...

    def decision(self, decision_id: str) -> dict[str, Any] | None:
        """The explain trail as JSON (id, symbol, intent, verdict, orders, fills); None if unknown."""
        ...

    def command(self, action: str, reason: str, source: str) -> dict[str, Any]:
        """Queue pause|resume|close_all|kill; seq, action, live, message."""
        ...


class TelegramAuthError(RuntimeError):
    """The Bot API refused the bot's token (401/404 on getMe): the bot cannot start."""


@dataclass
class _Pending:
    """A /kill or /close_all waiting for its button."""

    action: str
    reason: str
    chat_id: int
    created: float


class _RedactFilter(logging.Filter):
    """Redacts a library's record (message, arguments, traceback) before any handler formats it: the
    token is part of every Bot API URL that httpx and telegram log."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: keep its raw text
            message = f"{record.msg} {record.args}"
        clean = redact.redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact.redact(record.exc_text)
        return True


_FILTER = _RedactFilter()


def guard_library_logs() -> None:
    """Put the redacting filter on every logger of telegram, httpx and httpcore (idempotent)."""
    names = [n for n in logging.Logger.manager.loggerDict if n.split(".")[0] in _LIBRARY_LOGGERS]
    for name in {*names, *_LIBRARY_LOGGERS, "telegram.Bot", "telegram.ext.ExtBot", "telegram.ext.Updater"}:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class _Bot(ExtBot[None]):
    """``ExtBot`` that survives an update it cannot parse: the update is logged and replaced by an
    empty one with the same id, so polling confirms it instead of fetching it again forever."""

    async def _do_post(self, endpoint: str, data: Any, **kwargs: Any) -> Any:
        result = await super()._do_post(endpoint, data, **kwargs)
        if endpoint != "getUpdates" or not isinstance(result, list):
            return result
        clean: list[dict[str, Any]] = []
        for raw in result:
            uid = raw.get("update_id") if isinstance(raw, dict) else None
            if not isinstance(uid, int) or isinstance(uid, bool):
                log.warning("telegram.malformed_update", update_id=None, error="no integer update_id")
                continue
            try:
                Update.de_json(raw, self)
            except Exception as exc:  # any parse error: the library raises KeyError, TypeError...
                log.warning("telegram.malformed_update", update_id=uid, error=f"{type(exc).__name__}: {exc}")
                raw = {"update_id": uid}
            clean.append(raw)
        return clean


def _file_url(base_url: str) -> str:
    """The file URL next to a Bot API URL: ``.../bot`` -> ``.../file/bot``."""
    if base_url.endswith("/bot"):
        return base_url[: -len("bot")] + "file/bot"
    return base_url


class TelegramBot:
    """The bot for one run (see the module docstring). ``bot(ev)`` / ``bot.notify(ev)`` is the
    ``OpsBus`` listener; ``start()`` connects and polls in a thread; ``stop()`` ends it.

    ``poll_timeout_s`` is the long-poll's length, ``confirm_ttl_s`` how long a confirmation button
    works, ``queue_size`` how many notifications wait at most (more are dropped and counted),
    ``send_attempts`` / ``reply_attempts`` how often a notification / a reply is tried on a transient
    error, ``clock`` the monotonic clock the confirmations are timed with (tests move it)."""

    def __init__(
        self,
        config: TelegramConfig,
        token: str,
        view: RunControl,
        *,
        run_id: str = "",
        poll_timeout_s: int = 10,
        confirm_ttl_s: float = CONFIRM_TTL_S,
        queue_size: int = 256,
        send_attempts: int = 5,
        reply_attempts: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        token = (token or "").strip()
        if not token:
            raise ValueError(
                f"telegram: no bot token: set {config.token_env} in the environment or .env "
                "(create the bot with @BotFather; docs/telegram.md)"
            )
        if not config.chat_ids:
            raise ValueError(
                "telegram: chat_ids is empty: the bot answers and notifies the configured chats only"
            )
        redact.register(token)
        guard_library_logs()
        self.config = config
        self.view = view
        self.run_id = run_id
        self.chat_ids: tuple[int, ...] = tuple(dict.fromkeys(int(c) for c in config.chat_ids))
        self.poll_timeout_s = max(0, int(poll_timeout_s))
        self.confirm_ttl_s = float(confirm_ttl_s)
        self.send_attempts = max(1, int(send_attempts))
        self.reply_attempts = max(1, int(reply_attempts))
        self.clock = clock
        self.dropped = 0  # notifications dropped because the queue was full
        self.delivered = 0  # notification messages sent (one per chat)
        self._token = token
        self._levels = frozenset(config.notify_levels)
        self._outbox: queue.Queue[str] = queue.Queue(maxsize=max(1, int(queue_size)))
        self._pending: dict[str, _Pending] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_ev: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._settled = threading.Event()  # connected, or failed for good
        self._connected = threading.Event()
        self._fatal: str | None = None
        self._requests: tuple[HTTPXRequest, ...] = ()
        self.username = ""

    # -- the OpsBus listener ---------------------------------------------------------------------------
    def __call__(self, ev: OpsEvent) -> None:
        self.notify(ev)

    def notify(self, ev: OpsEvent) -> None:
        """Queue ``ev`` for every chat when its level is in ``notify_levels``. Returns at once; never
        raises (a full queue drops the event and counts it)."""
        try:
            if not ev.alertable or ev.level not in self._levels:
                return
            self._outbox.put_nowait(self._event_text(ev))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("telegram.notify_dropped", dropped=self.dropped, kind=ev.kind)
            return
        except Exception as exc:  # a listener never raises into trading
            log.warning("telegram.notify_failed", error=str(exc))
            return
        self._poke()

    def _event_text(self, ev: OpsEvent) -> str:
        lines = [f"[{str(ev.level).upper()}] {ev.title}"]
        if ev.body:
            lines.append(ev.body)
        run = ev.run_id or self.run_id
        if run:
            lines.append(f"run {run}")
        return _clip("\n".join(lines))

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(wake.set)

    # -- lifecycle -------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Whether the bot reached the Bot API and polls."""
        return self._connected.is_set() and not self._stop_requested.is_set()

    def start(self, timeout_s: float = 15.0) -> None:
        """Start the bot's thread and wait (up to ``timeout_s``) until it reached the Bot API.

        Raises ``TelegramAuthError`` when the Bot API refuses the token. A Bot API that does not
        answer is not an error here: the bot keeps retrying in the background (``telegram.unreachable``
        in the log) and ``start`` returns after ``timeout_s``."""
        if self._thread is not None:
            raise RuntimeError("the Telegram bot is already started")
        self._thread = threading.Thread(target=self._run, name="hflite-telegram", daemon=True)
        self._thread.start()
        self._settled.wait(timeout_s)
        if self._fatal is not None:
            self._thread.join(timeout=5.0)
            raise TelegramAuthError(self._fatal)
        if not self._connected.is_set():
            log.warning("telegram.connecting", waited_s=timeout_s, detail="the Bot API has not answered yet")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling, send what is queued (briefly), and end the thread (idempotent)."""
        self._stop_requested.set()
        loop, stop_ev = self._loop, self._stop_ev
        if loop is not None and stop_ev is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop_ev.set)
            self._poke()  # the notification loop drains and ends now, not at its next tick
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("telegram.stop_timeout", timeout_s=timeout)

    def __enter__(self) -> TelegramBot:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # the bot's thread never takes the process down
            log.error("telegram.crashed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._connected.clear()
            self._settled.set()

    async def _main(self) -> None:
        self._stop_ev, self._wake = asyncio.Event(), asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._stop_requested.is_set():
            return
        app = self._build()
        if not await self._connect(app):
            await self._shutdown(app)
            return
        sender = asyncio.create_task(self._send_loop(app.bot), name="hflite-telegram-notify")
        await self._stop_ev.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sender, timeout=5.0)
        await self._shutdown(app)

    def _build(self) -> Application[Any, Any, Any, Any, Any, Any]:
        guard_library_logs()
        base = self.config.base_url or "https://api.telegram.org/bot"
        self._requests = (
            HTTPXRequest(connection_pool_size=8, read_timeout=10.0, write_timeout=10.0, pool_timeout=5.0),
            HTTPXRequest(connection_pool_size=2, read_timeout=5.0, pool_timeout=5.0),
        )
        bot = _Bot(
            self._token,
            base_url=base,
            base_file_url=_file_url(base),
            request=self._requests[0],
            get_updates_request=self._requests[1],
        )
        app = Application.builder().bot(bot).build()
        app.add_handler(TypeHandler(Update, self._guard), group=-1)
        handlers: dict[str, Callable[[list[str]], str]] = {
            "start": self._help,
            "help": self._help,
            "status": self._status,
            "positions": self._positions,
            "pnl": self._pnl,
            "pause": lambda args: self._queue("pause", args),
            "resume": lambda args: self._queue("resume", args),
            "explain": self._explain,
        }
        for name, fn in handlers.items():
            app.add_handler(CommandHandler(name, self._answer(name, fn)))
        for action in _CONFIRMED:
            app.add_handler(CommandHandler(action, self._ask(action)))
        app.add_handler(CallbackQueryHandler(self._on_button))
        app.add_handler(MessageHandler(filters.ALL, self._on_other))
        app.add_error_handler(self._on_error)
        return app

    async def _connect(self, app: Application[Any, Any, Any, Any, Any, Any]) -> bool:
        """getMe, then start polling; network errors retried with backoff until stopped. False when
        stopped first, or when the token is refused (``_fatal`` says so)."""
        assert self._stop_ev is not None
        delay = 1.0
        while not self._stop_ev.is_set():
            try:
                await app.initialize()
                assert app.updater is not None
                await app.updater.start_polling(
                    timeout=self.poll_timeout_s,
                    bootstrap_retries=0,
                    allowed_updates=["message", "callback_query"],
                    drop_pending_updates=True,  # a command sent while the bot was down is not replayed
                    error_callback=self._on_poll_error,
                )
                await app.start()
            except InvalidToken as exc:
                self._fatal = (
                    f"telegram: the Bot API refused the token in {self.config.token_env} "
                    f"({redact.redact(str(exc)) or 'Unauthorized'}): check it with @BotFather"
                )
                log.error(
                    "telegram.bad_token", token_env=self.config.token_env, error=redact.redact(str(exc))
                )
                self._settled.set()
                return False
            except TelegramError as exc:
                log.warning("telegram.unreachable", error=_err(exc), retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_ev.wait(), timeout=delay)
                delay = min(delay * 2, 30.0)
                continue
            self.username = app.bot.username or ""
            await self._set_commands(app)
            self._connected.set()
            self._settled.set()
            log.info("telegram.started", bot=self.username, chats=len(self.chat_ids), run_id=self.run_id)
            return True
        return False

    async def _set_commands(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        try:
            await app.bot.set_my_commands([BotCommand(n, d[:256]) for n, d in COMMANDS])
        except TelegramError as exc:  # the menu is a convenience: the commands work without it
            log.warning("telegram.commands_menu_failed", error=_err(exc))

    async def _shutdown(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        async def down() -> None:
            if app.updater is not None and app.updater.running:
                await app.updater.stop()
            if app.running:
                await app.stop()
            await app.shutdown()

        try:
            await asyncio.wait_for(down(), timeout=8.0)
        except Exception as exc:  # a Bot API gone at shutdown: nothing left to save
            log.warning("telegram.shutdown_failed", error=_err(exc))
        for request in self._requests:  # an application that never initialised leaves them open
            with contextlib.suppress(Exception):
                await request.shutdown()
        self._connected.clear()
        log.info("telegram.stopped", delivered=self.delivered, dropped=self.dropped)

    def _on_poll_error(self, exc: TelegramError) -> None:
        """Polling failed (the library retries with backoff): one log line, redacted."""
        log.warning("telegram.poll_failed", error=_err(exc))

    # -- notifications ---------------------------------------------------------------------------------
    async def _send_loop(self, bot: ExtBot[Any]) -> None:
        assert self._stop_ev is not None
        assert self._wake is not None
        while not self._stop_ev.is_set():
            self._wake.clear()
            await self._drain(bot, retry=True)  # first round: what was queued before the loop ran
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.5)
        with contextlib.suppress(TimeoutError):  # a last try for what is queued (run.stop...)
            await asyncio.wait_for(self._drain(bot, retry=False), timeout=3.0)

    async def _drain(self, bot: ExtBot[Any], *, retry: bool) -> None:
        while True:
            try:
                text = self._outbox.get_nowait()
            except queue.Empty:
                return
            for chat_id in self.chat_ids:
                await self._deliver(bot, chat_id, text, retry=retry)

    async def _deliver(self, bot: ExtBot[Any], chat_id: int, text: str, *, retry: bool) -> bool:
        """Send one notification; transient errors retried with backoff (while running)."""
        sent = await self._send(bot, chat_id, text, None, self.send_attempts if retry else 1, "notify")
        self.delivered += int(sent)
        return sent

    async def _send(
        self,
        bot: ExtBot[Any],
        chat_id: int,
        text: str,
        markup: InlineKeyboardMarkup | None,
        attempts: int,
        what: str,
    ) -> bool:
        """``sendMessage`` (plain text, redacted: an error text could carry a key), up to ``attempts``
        times on a transient error (5xx, timeout, network, flood wait), waiting 1 s, 2 s, 4 s... between
        them; never raises."""
        assert self._stop_ev is not None
        delay = 1.0
        for attempt in range(1, attempts + 1):
            try:
                await bot.send_message(chat_id=chat_id, text=_clip(redact.redact(text)), reply_markup=markup)
            except (BadRequest, Forbidden, InvalidToken) as exc:  # final: retrying cannot help
                log.warning(f"telegram.{what}_failed", chat_id=chat_id, error=_err(exc), final=True)
                return False
            except RetryAfter as exc:
                wait = _retry_after_s(exc)
                log.warning(f"telegram.{what}_retry", chat_id=chat_id, error=_err(exc), attempt=attempt)
            except TelegramError as exc:
                wait, delay = delay, min(delay * 2, 30.0)
                log.warning(f"telegram.{what}_retry", chat_id=chat_id, error=_err(exc), attempt=attempt)
            else:
                return True
            if attempt == attempts or self._stop_ev.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_ev.wait(), timeout=wait)
        log.warning(f"telegram.{what}_dropped", chat_id=chat_id, attempts=attempt)
        return False

    # -- handlers --------------------------------------------------------------------------------------
    async def _guard(self, update: object, _context: ContextTypes.DEFAULT_TYPE) -> None:
        """Group -1, before every handler: only the configured chats reach the run."""
        if not isinstance(update, Update):
            raise ApplicationHandlerStop
        chat = update.effective_chat
        if chat is None:  # an empty (malformed) update, or a kind with no chat: nothing to answer
            log.info("telegram.ignored", update_id=update.update_id)
            raise ApplicationHandlerStop
        if chat.id not in self.chat_ids:
            user = update.effective_user
            log.warning(
                "telegram.refused",
                chat_id=chat.id,
                user_id=user.id if user else None,
                what="button" if update.callback_query else "message",
            )
            raise ApplicationHandlerStop

    def _answer(
        self, name: str, fn: Callable[[list[str]], str]
    ) -> Callable[[Update, ContextTypes.DEFAULT_TYPE], Any]:
        async def handler(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            chat = update.effective_chat
            assert chat is not None  # the guard let it through
            log.info("telegram.command", command=name, chat_id=chat.id)
            try:
                text = fn(list(context.args or []))
            except Exception as exc:  # a journal that cannot be read: say so, keep polling
                log.warning("telegram.command_failed", command=name, error=f"{type(exc).__name__}: {exc}")
                text = f"/{name} failed: {type(exc).__name__}: {exc}"
            await self._reply(context.bot, chat.id, text)

        return handler

    def _ask(self, action: str) -> Callable[[Update, ContextTypes.DEFAULT_TYPE], Any]:
        async def handler(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            chat = update.effective_chat
            assert chat is not None
            log.info("telegram.command", command=action, chat_id=chat.id)
            now = self.clock()
            self._pending = {k: p for k, p in self._pending.items() if now - p.created <= self.confirm_ttl_s}
            reason = _reason(context.args) or f"/{action} from telegram chat {chat.id}"
            key = secrets.token_hex(8)
            self._pending[key] = _Pending(action, reason, chat.id, now)
            text = (
                f"{action.replace('_', ' ')}: {_WHAT[action]}.\nReason: {reason}\n"
                f"Press the button within {self.confirm_ttl_s:.0f} s to confirm."
            )
            note = self._not_live_note("command")
            if note:
                text += "\n" + note
            markup = InlineKeyboardMarkup(
                [
                    [
                        InlineKeyboardButton(_BUTTONS[action], callback_data=f"yes:{key}"),
                        InlineKeyboardButton("Cancel", callback_data=f"no:{key}"),
                    ]
                ]
            )
            await self._reply(context.bot, chat.id, text, markup)

        return handler

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        chat = update.effective_chat
        assert query is not None
        assert chat is not None
        answer, _, key = (query.data or "").partition(":")
        pending = self._pending.pop(key, None) if answer in ("yes", "no") else None
        if pending is not None and pending.chat_id != chat.id:  # another chat's button: not this one's
            self._pending[key], pending = pending, None
        if pending is None:
            log.warning("telegram.button_unknown", chat_id=chat.id, data=(query.data or "")[:64])
            text = "this button is no longer valid (already used or unknown): nothing queued"
        elif self.clock() - pending.created > self.confirm_ttl_s:
            log.info("telegram.confirm_expired", action=pending.action, chat_id=chat.id)
            text = (
                f"confirmation expired after {self.confirm_ttl_s:.0f} s: nothing queued; "
                f"send /{pending.action} again"
            )
        elif answer == "no":
            log.info("telegram.confirm_cancelled", action=pending.action, chat_id=chat.id)
            text = f"cancelled: no {pending.action} queued"
        else:
            text = self._confirmed(pending)
        with contextlib.suppress(TelegramError):  # the spinner on the phone stops either way
            await query.answer(text[:200])
        message = query.message
        if message is not None and message.message_id:
            try:
                await context.bot.edit_message_text(
                    chat_id=chat.id, message_id=message.message_id, text=_clip(text), reply_markup=None
                )
                return
            except TelegramError as exc:
                log.info("telegram.edit_failed", error=_err(exc))
        await self._reply(context.bot, chat.id, text)

    def _confirmed(self, pending: _Pending) -> str:
        try:
            result = self.view.command(pending.action, pending.reason, "telegram")
        except Exception as exc:
            log.warning(
                "telegram.command_failed", command=pending.action, error=f"{type(exc).__name__}: {exc}"
            )
            return f"{pending.action} NOT queued: {type(exc).__name__}: {exc}"
        log.warning(
            "telegram.command_queued", action=pending.action, seq=result.get("seq"), reason=pending.reason
        )
        return self._command_text(result, pending.action)

    async def _on_other(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Anything else from an allowed chat: an unknown command or plain text gets the short help;
        a message without text (a photo, a sticker...) gets nothing."""
        message = update.effective_message
        chat = update.effective_chat
        if message is None or chat is None or not message.text:
            return
        word = message.text.split()[0] if message.text.split() else ""
        head = f"unknown command {word[:40]}" if word.startswith("/") else "I only take commands"
        text = f"{head}. Commands: {' '.join('/' + n for n, _ in COMMANDS)}"
        note = self._not_live_note("help")
        await self._reply(context.bot, chat.id, f"{note}\n{text}" if note else text)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A handler raised: log it (redacted); polling goes on."""
        err = context.error
        log.warning(
            "telegram.handler_failed",
            update_id=getattr(update, "update_id", None),
            error=f"{type(err).__name__}: {err}" if err else "",
        )

    async def _reply(
        self, bot: ExtBot[Any], chat_id: int, text: str, markup: InlineKeyboardMarkup | None = None
    ) -> None:
        await self._send(bot, chat_id, text, markup, self.reply_attempts, "reply")

    # -- the replies (plain functions of the view, for the handlers) ----------------------------------
    def _not_live_note(self, kind: str = "read", status: Mapping[str, Any] | None = None) -> str:
        """ "" when the runtime is live; otherwise the line every reply carries: for a ``command``
        (queued, applies when it resumes), a ``read`` (the last recorded values) or ``help``."""
        if status is None:
            try:
                status = self.view.status()
            except Exception as exc:
                return f"runtime state unknown ({type(exc).__name__}: {exc})"
        if status.get("live"):
            return ""
        if kind == "command":
            return NOT_LIVE_COMMAND
        state = status.get("runtime") or "unknown"
        if kind == "help":
            return f"runtime not running ({state}): commands are queued and apply when it resumes"
        return f"runtime not running ({state}): these are the last values it recorded"

    def _help(self, _args: list[str]) -> str:
        lines = ["HedgeFund-Lite bot. Commands:"] + [f"/{n} - {d}" for n, d in COMMANDS]
        note = self._not_live_note("help")
        return "\n".join([note, *lines] if note else lines)

    def _status(self, _args: list[str]) -> str:
        s = self.view.status()
        lines = [
            f"run {s.get('run_id') or '(none)'}: {s.get('runtime', 'unknown')}"
            + (f", venue {s['venue']}" if s.get("venue") else ""),
            f"bar {s.get('bar_ts') or 'none yet'}",
            f"equity {_money(s.get('equity'))}" + (f", cash {_cash(s['cash'])}" if s.get("cash") else ""),
            f"positions {s.get('positions', 0)}, open orders {s.get('open_orders', 0)}",
            f"risk {s.get('risk') or 'unknown'}" + (f": {s['risk_reason']}" if s.get("risk_reason") else ""),
        ]
        if s.get("halted"):
            lines.append(f"HALTED: {s['halted']}")
        if s.get("detail") and not s.get("live"):
            lines.append(str(s["detail"]))
        note = self._not_live_note("read", s)
        return "\n".join([note, *lines] if note else lines)

    def _positions(self, _args: list[str]) -> str:
        rows = self.view.positions()
        lines = [f"{len(rows)} open position{'s' if len(rows) != 1 else ''}"]
        for p in rows:
            lines.append(
                f"{p.get('symbol', '?')} {_qty(p.get('qty'))} @ {_money(p.get('avg_price'))}, "
                f"last {_money(p.get('last'))}, value {_money(p.get('value'))}, "
                f"P&L {_signed(p.get('unrealized_pnl'))}"
            )
        note = self._not_live_note("read")
        return "\n".join([note, *lines] if note else lines)

    def _pnl(self, _args: list[str]) -> str:
        p = self.view.pnl()
        pct = p.get("total_pct")
        lines = [
            f"equity {_money(p.get('equity'))} (start {_money(p.get('initial_cash'))})",
            f"total {_signed(p.get('total_pnl'))}"
            + (f" ({pct:+.2f}%)" if isinstance(pct, int | float) else ""),
            f"day {_signed(p.get('day_pnl'))}, week {_signed(p.get('week_pnl'))}, "
            f"month {_signed(p.get('month_pnl'))}",
        ]
        note = self._not_live_note("read")
        return "\n".join([note, *lines] if note else lines)

    def _queue(self, action: str, args: list[str]) -> str:
        reason = _reason(args) or f"/{action} from telegram"
        result = self.view.command(action, reason, "telegram")
        log.warning("telegram.command_queued", action=action, seq=result.get("seq"), reason=reason)
        return self._command_text(result, action)

    def _command_text(self, result: Mapping[str, Any], action: str) -> str:
        text = str(result.get("message") or f"queued {action} (command {result.get('seq')})")
        return text if result.get("live") else f"{text}\n{NOT_LIVE_COMMAND}"

    def _explain(self, args: list[str]) -> str:
        if not args:
            return "usage: /explain <decision id>  (an intent id like trend-SPY-d12, or an order id)"
        ident = args[0][:200]
        trail = self.view.decision(ident)
        note = self._not_live_note("read")
        if trail is None:
            lines = [f"no decision {ident}"]
            similar = getattr(self.view, "similar_decisions", None)
            if callable(similar):
                try:
                    found = [str(s) for s in similar(ident, 3)][:3]
                except Exception as exc:
                    log.info("telegram.suggest_failed", error=str(exc))
                    found = []
                if found:
                    lines.append("did you mean: " + ", ".join(found))
        else:
            lines = _trail_lines(trail)
        return "\n".join([note, *lines] if note else lines)


# -- formatting ------------------------------------------------------------------------------------------
def _trail_lines(t: Mapping[str, Any]) -> list[str]:
    """A decision's trail, short: intent, verdict with each check, orders and fills."""
    intent = t.get("intent")
    symbol = t.get("symbol") or (intent.get("symbol") if isinstance(intent, Mapping) else "") or ""
    lines = [f"decision {t.get('id', '?')}" + (f" ({symbol})" if symbol else "")]
    if isinstance(intent, Mapping):
        what = " ".join(str(intent[k]) for k in ("kind", "side") if intent.get(k))
        price = intent.get("price")
        lines.append(
            "intent: "
            + (what or "?")
            + (f" at {_money(price)}" if isinstance(price, int | float) else "")
            + (f", {intent['reason']}" if intent.get("reason") else "")
        )
    elif intent:
        lines.append(f"intent: {intent}")
    raw_verdict = t.get("verdict")
    v: Mapping[str, Any] = raw_verdict if isinstance(raw_verdict, Mapping) else {}
    verdict = f"verdict: {v.get('status', '?')}"
    if v.get("qty_requested") is not None or v.get("qty_approved") is not None:
        verdict += f" {_qty(v.get('qty_approved'))} of {_qty(v.get('qty_requested'))}"
    if v.get("reason"):
        verdict += f" - {v['reason']}"
    lines.append(verdict)
    for check in (v.get("checks") or [])[:20]:
        lines.append("  " + _check_line(check))
    orders, fills = t.get("orders") or [], t.get("fills") or []
    for o in orders[:10]:
        if isinstance(o, Mapping):
            what = f"{o.get('side', '')} {_qty(o.get('qty'))} {o.get('status', '')}".strip()
            lines.append(f"order {o.get('id', '?')}: {what}")
    lines.append(f"{len(orders)} order(s), {len(fills)} fill(s)")
    return lines


def _check_line(check: Any) -> str:
    """One risk check: a dict (rule, passed, detail or value and limit), or a report's
    ``[name, value, limit, passed]``."""
    if isinstance(check, Mapping):
        rule = check.get("rule") or check.get("name") or "?"
        passed = bool(check.get("passed"))
        detail = check.get("detail")
        if detail is None and ("value" in check or "limit" in check):
            detail = f"{_num(check.get('value'))} vs limit {_num(check.get('limit'))}"
    elif isinstance(check, Sequence) and not isinstance(check, str) and len(check) >= 4:
        rule, passed = check[0], bool(check[3])
        detail = f"{_num(check[1])} vs limit {_num(check[2])}"
    else:
        return str(check)
    return f"{'ok  ' if passed else 'FAIL'} {rule}" + (f": {detail}" if detail else "")


def _reason(args: Sequence[str] | None) -> str:
    return " ".join(args or []).strip()[:300]


def _clip(text: str) -> str:
    text = text.strip() or "(empty)"
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def _err(exc: BaseException) -> str:
    return redact.redact(f"{type(exc).__name__}: {exc}")


def _retry_after_s(exc: RetryAfter) -> float:
    value: Any = exc.retry_after
    seconds = value.total_seconds() if hasattr(value, "total_seconds") else float(value)
    return max(0.0, seconds) + 0.5


def _num(x: Any) -> str:
    return f"{x:,.4g}" if isinstance(x, int | float) and not isinstance(x, bool) else "n/a"


def _money(x: Any) -> str:
    return f"{x:,.2f}" if isinstance(x, int | float) and not isinstance(x, bool) else "n/a"


def _signed(x: Any) -> str:
    return f"{x:+,.2f}" if isinstance(x, int | float) and not isinstance(x, bool) else "n/a"


def _qty(x: Any) -> str:
    return f"{x:,.8g}" if isinstance(x, int | float) and not isinstance(x, bool) else "n/a"


def _cash(cash: Mapping[str, Any]) -> str:
    return ", ".join(f"{ccy} {_money(v)}" for ccy, v in sorted(cash.items()))
