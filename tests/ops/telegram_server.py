"""A local fake of the Telegram Bot API (https://core.telegram.org/bots/api), for the bot's tests.

It speaks what python-telegram-bot calls while polling and answering: ``getMe``, ``deleteWebhook``,
``getUpdates`` (long poll honouring ``offset``, ``limit``, ``timeout`` and ``allowed_updates``),
``sendMessage``, ``editMessageText``, ``answerCallbackQuery``, ``setMyCommands`` and ``getMyCommands``,
at ``/bot<token>/<method>``, with the documented envelopes: ``{"ok": true, "result": ...}`` or
``{"ok": false, "error_code": ..., "description": ...}`` (a wrong token: 401 Unauthorized).
Parameters arrive as a query string, form fields (each value JSON-encoded where it is an object, as
the library sends them) or a JSON body.

Test helpers: ``push_message`` / ``push_callback`` / ``push_raw`` queue what a user does, ``sent`` is
what the bot wrote to a chat, ``fail`` / ``recover`` make every method answer an error for a while,
``fail_next`` fails the next calls of one method, ``wait_for`` polls a predicate.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from hflite.execution.venues.fakes.http import Handler, HttpApp, Server

__all__ = ["TelegramFake"]

T = TypeVar("T")

#: Form fields holding JSON objects or arrays; integer fields; boolean fields (the rest stay strings).
_JSON_FIELDS = frozenset(
    {"reply_markup", "entities", "allowed_updates", "commands", "reply_parameters", "link_preview_options"}
)
_INT_FIELDS = frozenset({"chat_id", "message_id", "offset", "limit", "timeout"})
_BOOL_FIELDS = frozenset({"drop_pending_updates", "show_alert", "disable_notification", "protect_content"})
#: The update kinds Telegram delivers when ``allowed_updates`` is empty (all but these three).
_OPT_IN_KINDS = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
MAX_TEXT = 4096


class ApiError(Exception):
    """An error answer: ``{"ok": false, "error_code": status, "description": ...}``."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status, self.description = status, description


def _typed(name: str, value: str) -> Any:
    """A form or query value as the Bot API reads it (ints, booleans and JSON objects by field)."""
    if name in _JSON_FIELDS:
        return json.loads(value)
    if name in _INT_FIELDS:
        try:
            return int(value)
        except ValueError:
            return int(float(value))  # "timeout" may come as "1.0"
    if name in _BOOL_FIELDS:
        return value.lower() in ("true", "1")
    return value


class _Server(Server):
    app: TelegramFake


class _Handler(Handler):
    server: _Server

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def _route(self) -> None:
        app = self.server.app
        split = urlsplit(self.path)
        parts = split.path.strip("/").split("/")
        if len(parts) != 2 or not parts[0].startswith("bot"):
            self._send_json(404, {"ok": False, "error_code": 404, "description": "Not Found"})
            return
        token, method = parts[0][3:], parts[1]
        try:
            params = self._params(split.query)
        except (ValueError, json.JSONDecodeError) as exc:
            self._send_json(400, {"ok": False, "error_code": 400, "description": f"Bad Request: {exc}"})
            return
        status, payload = app.handle(token, method, params)
        self._send_json(status, payload)

    def _params(self, query: str) -> dict[str, Any]:
        params: dict[str, Any] = {k: _typed(k, v) for k, v in parse_qsl(query)}
        body = self._read_body()
        if not body:
            return params
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype == "application/json":
            loaded = json.loads(body)
            if not isinstance(loaded, dict):
                raise ValueError("the JSON body must be an object")
            params.update(loaded)
        elif ctype == "application/x-www-form-urlencoded":
            params.update({k: _typed(k, v) for k, v in parse_qsl(body.decode("utf-8"))})
        else:
            raise ValueError(f"unsupported content type {ctype or '(none)'}")
        return params


class TelegramFake(HttpApp):
    """The Bot API for one bot (``token``) on ``host:port`` (0 = a free port). ``base_url`` is what
    the library takes (``http://127.0.0.1:PORT/bot``)."""

    def __init__(
        self,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bot_id: int = 7_000_000_001,
        username: str = "hflite_test_bot",
    ) -> None:
        super().__init__(host, port)
        self.token = token
        self.bot_user = {
            "id": bot_id,
            "is_bot": True,
            "first_name": "HedgeFund-Lite",
            "username": username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self._cond = threading.Condition()
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = 100_001
        self._next_callback_id = 1
        self._messages: dict[int, dict[int, dict[str, Any]]] = {}  # chat id -> message id -> Message
        self._sent: list[dict[str, Any]] = []
        self._answers: list[dict[str, Any]] = []
        self._open_callbacks: set[str] = set()
        self._commands: list[dict[str, Any]] = []
        self._calls: dict[str, int] = {}
        self._failing: tuple[int, str] | None = None
        self._fail_next: dict[str, list[int]] = {}
        self._failed = 0
        self._stopping = False

    # -- lifecycle ------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"{self.url}/bot"

    def start(self) -> TelegramFake:
        with self._cond:
            self._stopping = False
        self._start_http(_Server, _Handler, "telegram-fake-http")
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._stop_http()

    # -- what a user does -----------------------------------------------------------------------------
    def push_message(
        self, chat_id: int, text: str, *, user_id: int | None = None, chat_type: str | None = None
    ) -> int:
        """A user writes ``text`` in ``chat_id`` (a command gets its ``bot_command`` entity); the
        update's id."""
        with self._cond:
            message_id = self._next_message_id(chat_id)
            message: dict[str, Any] = {
                "message_id": message_id,
                "from": self._user(chat_id, user_id),
                "chat": self._chat(chat_id, chat_type),
                "date": int(time.time()),
                "text": text,
            }
            if text.startswith("/"):
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
            self._messages.setdefault(chat_id, {})[message_id] = message
            return self._queue({"message": message})

    def push_callback(self, chat_id: int, message_id: int, data: str, *, user_id: int | None = None) -> int:
        """A user presses an inline button whose ``callback_data`` is ``data`` under message
        ``message_id`` of ``chat_id``; the update's id."""
        with self._cond:
            message = self._messages.get(chat_id, {}).get(message_id) or {
                "message_id": message_id,
                "chat": self._chat(chat_id, None),
                "date": int(time.time()),
            }
            query_id = str(self._next_callback_id)
            self._next_callback_id += 1
            self._open_callbacks.add(query_id)
            query = {
                "id": query_id,
                "from": self._user(chat_id, user_id),
                "chat_instance": f"ci{chat_id}",
                "message": dict(message),
                "data": data,
            }
            return self._queue({"callback_query": query})

    def push_raw(self, update: dict[str, Any]) -> int:
        """Queue ``update`` as it is (an ``update_id`` is added when missing); its id."""
        with self._cond:
            return self._queue(dict(update))

    # -- what the bot did -----------------------------------------------------------------------------
    def sent(self, chat_id: int) -> list[dict[str, Any]]:
        """Every ``sendMessage`` and ``editMessageText`` to ``chat_id``, oldest first: method,
        chat_id, message_id, text, parse_mode, reply_markup."""
        with self._cond:
            return [dict(s) for s in self._sent if s["chat_id"] == chat_id]

    def texts(self, chat_id: int) -> list[str]:
        """The texts the bot sent (or edited to) in ``chat_id``, oldest first."""
        return [s["text"] for s in self.sent(chat_id)]

    def all_sent(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(s) for s in self._sent]

    def answers(self) -> list[dict[str, Any]]:
        """Every ``answerCallbackQuery``: callback_query_id, text."""
        with self._cond:
            return [dict(a) for a in self._answers]

    def calls(self, method: str) -> int:
        """How many requests ``method`` got (failed ones included)."""
        with self._cond:
            return self._calls.get(method, 0)

    @property
    def commands(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(c) for c in self._commands]

    @property
    def failed(self) -> int:
        """Requests answered with the ``fail`` error so far."""
        with self._cond:
            return self._failed

    def pending_updates(self) -> int:
        with self._cond:
            return len(self._updates)

    # -- faults ---------------------------------------------------------------------------------------
    def fail(self, status: int = 500, description: str = "Internal Server Error") -> None:
        """Answer every request with ``status`` until ``recover``."""
        with self._cond:
            self._failing = (status, description)

    def recover(self) -> None:
        with self._cond:
            self._failing = None
            self._fail_next.clear()
            self._cond.notify_all()

    def fail_next(self, method: str, times: int = 1, status: int = 500) -> None:
        """Answer the next ``times`` calls of ``method`` with ``status`` (others answer normally)."""
        with self._cond:
            self._fail_next[method] = [status] * times

    @staticmethod
    def wait_for(pred: Callable[[], T], timeout: float = 5.0, what: str = "the condition") -> T:
        """Poll ``pred`` until it returns something truthy (returned); AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = pred()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.02)

    # -- the API --------------------------------------------------------------------------------------
    def handle(self, token: str, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One request: (HTTP status, the JSON envelope)."""
        with self._cond:
            self._calls[method] = self._calls.get(method, 0) + 1
            if token != self.token:
                return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
            failing = self._failing
            if failing is None and self._fail_next.get(method):
                failing = (self._fail_next[method].pop(0), "Internal Server Error")
            if failing is not None:
                self._failed += 1
                status, description = failing
                return status, {"ok": False, "error_code": status, "description": description}
        route = _ROUTES.get(method)
        if route is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
        try:
            result = route(self, params)
        except ApiError as exc:
            return exc.status, {"ok": False, "error_code": exc.status, "description": exc.description}
        except (KeyError, TypeError, ValueError) as exc:
            return 400, {"ok": False, "error_code": 400, "description": f"Bad Request: {exc}"}
        return 200, {"ok": True, "result": result}

    def _get_me(self, _params: dict[str, Any]) -> dict[str, Any]:
        return dict(self.bot_user)

    def _delete_webhook(self, params: dict[str, Any]) -> bool:
        if params.get("drop_pending_updates"):
            with self._cond:
                self._updates.clear()
        return True

    def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = params.get("offset")
        limit = max(1, min(100, int(params.get("limit") or 100)))
        timeout = max(0.0, float(params.get("timeout") or 0))
        allowed = params.get("allowed_updates") or []
        deadline = time.monotonic() + timeout
        with self._cond:
            if isinstance(offset, int) and offset > 0:  # confirms every update before it
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            wanted = set(allowed) if allowed else None  # Telegram drops what it will not deliver
            self._updates = [u for u in self._updates if _delivered(u, wanted)]
            while not self._updates and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return [json.loads(json.dumps(u)) for u in self._updates[:limit]]

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, text = int(params["chat_id"]), str(params.get("text") or "")
        _check_text(text)
        with self._cond:
            message: dict[str, Any] = {
                "message_id": self._next_message_id(chat_id),
                "from": dict(self.bot_user),
                "chat": self._chat(chat_id, None),
                "date": int(time.time()),
                "text": text,
            }
            markup = params.get("reply_markup")
            if isinstance(markup, dict) and "inline_keyboard" in markup:
                message["reply_markup"] = markup
            self._messages.setdefault(chat_id, {})[message["message_id"]] = message
            self._record("sendMessage", message, params)
            return dict(message)

    def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
        text = str(params.get("text") or "")
        _check_text(text)
        with self._cond:
            message = self._messages.get(chat_id, {}).get(message_id)
            if message is None:
                raise ApiError(400, "Bad Request: message to edit not found")
            markup = params.get("reply_markup")
            if text == message.get("text") and markup == message.get("reply_markup"):
                raise ApiError(400, "Bad Request: message is not modified")
            message["text"] = text
            message["edit_date"] = int(time.time())
            if isinstance(markup, dict) and "inline_keyboard" in markup:
                message["reply_markup"] = markup
            else:
                message.pop("reply_markup", None)
            self._record("editMessageText", message, params)
            return dict(message)

    def _answer_callback_query(self, params: dict[str, Any]) -> bool:
        query_id = str(params["callback_query_id"])
        with self._cond:
            if query_id not in self._open_callbacks:
                raise ApiError(
                    400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
                )
            self._open_callbacks.discard(query_id)
            self._answers.append({"callback_query_id": query_id, "text": params.get("text")})
        return True

    def _set_my_commands(self, params: dict[str, Any]) -> bool:
        commands = params["commands"]
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError(400, "Bad Request: commands must be a list of at most 100 BotCommand")
        for c in commands:
            name, desc = str(c["command"]), str(c["description"])
            if not (1 <= len(name) <= 32 and name.replace("_", "").isalnum() and name == name.lower()):
                raise ApiError(400, f"Bad Request: BOT_COMMAND_INVALID ({name!r})")
            if not 1 <= len(desc) <= 256:
                raise ApiError(400, "Bad Request: command description must be 1-256 characters")
        with self._cond:
            self._commands = [
                {"command": str(c["command"]), "description": str(c["description"])} for c in commands
            ]
        return True

    def _get_my_commands(self, _params: dict[str, Any]) -> list[dict[str, Any]]:
        return self.commands

    # -- plumbing (called with the lock held) ---------------------------------------------------------
    def _queue(self, update: dict[str, Any]) -> int:
        if "update_id" not in update:
            update["update_id"] = self._next_update_id
            self._next_update_id += 1
        self._updates.append(update)
        self._cond.notify_all()
        return int(update["update_id"])

    def _next_message_id(self, chat_id: int) -> int:
        return max(self._messages.get(chat_id, {}), default=0) + 1

    def _record(self, method: str, message: dict[str, Any], params: dict[str, Any]) -> None:
        self._sent.append(
            {
                "method": method,
                "chat_id": message["chat"]["id"],
                "message_id": message["message_id"],
                "text": message["text"],
                "parse_mode": params.get("parse_mode"),
                "reply_markup": message.get("reply_markup"),
            }
        )

    @staticmethod
    def _chat(chat_id: int, chat_type: str | None) -> dict[str, Any]:
        kind = chat_type or ("private" if chat_id > 0 else "group")
        if kind == "private":
            return {"id": chat_id, "type": "private", "first_name": "Ops"}
        return {"id": chat_id, "type": kind, "title": f"chat {chat_id}"}

    @staticmethod
    def _user(chat_id: int, user_id: int | None) -> dict[str, Any]:
        return {"id": user_id or abs(chat_id), "is_bot": False, "first_name": "Ops", "language_code": "en"}


def _delivered(update: dict[str, Any], wanted: set[str] | None) -> bool:
    """Whether Telegram delivers ``update`` under ``allowed_updates`` (None: the default kinds).
    An update with no known kind (a malformed one, for tests) is delivered."""
    kinds = {k for k in update if k != "update_id"}
    if not kinds:
        return True
    if wanted is None:
        return not kinds <= _OPT_IN_KINDS
    return bool(kinds & wanted)


def _check_text(text: str) -> None:
    if not text.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    if len(text) > MAX_TEXT:
        raise ApiError(400, "Bad Request: message is too long")


_ROUTES: dict[str, Callable[[TelegramFake, dict[str, Any]], Any]] = {
    "getMe": TelegramFake._get_me,
    "deleteWebhook": TelegramFake._delete_webhook,
    "getUpdates": TelegramFake._get_updates,
    "sendMessage": TelegramFake._send_message,
    "editMessageText": TelegramFake._edit_message_text,
    "answerCallbackQuery": TelegramFake._answer_callback_query,
    "setMyCommands": TelegramFake._set_my_commands,
    "getMyCommands": TelegramFake._get_my_commands,
}
