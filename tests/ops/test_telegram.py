"""The Telegram bot against a local fake of the Bot API (tests/ops/telegram_server.py): every command's
reply, the confirmation button, the chat allow-list, notifications, a failing Bot API, a wrong token,
malformed updates, and the token kept out of every log."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from hflite import logs, redact
from hflite.config import TelegramConfig
from hflite.execution.oms import SqliteJournal
from hflite.ops.events import OpsBus, OpsEvent
from hflite.ops.state import RunView
from hflite.ops.telegram import COMMANDS, NOT_LIVE_COMMAND, TelegramAuthError, TelegramBot
from tests.ops.telegram_server import TelegramFake

TOKEN = "7000000001:AAH-hflite-test-token-9f8e7d6c5b4a"
CHAT, OTHER_CHAT, STRANGER = 111_222_333, -100_444_555, 999_888_777


class FakeRun:
    """A RunControl with real-looking answers; records every read and every queued command."""

    def __init__(self, *, live: bool = True) -> None:
        self.live = live
        self.reads: list[str] = []
        self.commands: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    def status(self) -> dict[str, Any]:
        self.reads.append("status")
        return {
            "run_id": "paper-2024-06-03-a1",
            "runtime": "live" if self.live else "stopped",
            "live": self.live,
            "halted": "",
            "bar_ts": "2024-06-03T14:30:00+00:00",
            "equity": 101_234.5,
            "cash": {"USD": 55_000.0},
            "positions": 2,
            "open_orders": 1,
            "risk": "running",
            "risk_reason": "",
            "venue": "paper",
        }

    def positions(self) -> list[dict[str, Any]]:
        self.reads.append("positions")
        return [
            {"symbol": "SPY", "qty": 50.0, "avg_price": 520.0, "last": 531.25, "value": 26_562.5,
             "unrealized_pnl": 562.5},
            {"symbol": "QQQ", "qty": 40.0, "avg_price": 455.0, "last": 450.0, "value": 18_000.0,
             "unrealized_pnl": -200.0},
        ]  # fmt: skip

    def pnl(self) -> dict[str, Any]:
        self.reads.append("pnl")
        return {
            "equity": 101_234.5,
            "initial_cash": 100_000.0,
            "total_pnl": 1_234.5,
            "total_pct": 1.2345,
            "day_pnl": 120.0,
            "week_pnl": -80.25,
            "month_pnl": None,
        }

    def decision(self, decision_id: str) -> dict[str, Any] | None:
        self.reads.append(f"decision {decision_id}")
        if decision_id != "trend-SPY-d12":
            return None
        return {
            "id": "trend-SPY-d12",
            "symbol": "SPY",
            "intent": {
                "kind": "entry",
                "side": "buy",
                "price": 520.0,
                "reason": "fast MA crossed above slow",
            },
            "verdict": {
                "status": "resized",
                "reason": "position_pct cap",
                "qty_requested": 80.0,
                "qty_approved": 50.0,
                "checks": [
                    {"rule": "daily_loss_pct", "passed": True, "detail": "0.1 vs limit 3"},
                    {"rule": "position_pct", "passed": False, "detail": "41.6 vs limit 25"},
                ],
            },
            "orders": [
                {"id": "trend-SPY-20240603T143000-e1", "side": "buy", "qty": 50.0, "status": "filled"}
            ],
            "fills": [{"order_id": "trend-SPY-20240603T143000-e1", "qty": 50.0, "price": 520.0}],
        }

    def similar_decisions(self, decision_id: str, n: int) -> list[str]:
        pool = ["trend-SPY-d12", "trend-SPY-d13", "trend-SPY-d14", "trend-SPY-d15"]
        return [i for i in pool if i.startswith(decision_id[:9])][:n]

    def command(self, action: str, reason: str, source: str) -> dict[str, Any]:
        with self.lock:
            self.commands.append((action, reason, source))
            seq = len(self.commands)
        if self.live:
            message = f"queued {action} (command {seq}): applies at the runtime's next bar-time"
        else:
            message = f"queued {action} (command {seq}), but the runtime is stopped"
        return {"seq": seq, "action": action, "live": self.live, "message": message}


class Clock:
    """A monotonic clock the test moves (confirmation expiry)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[TelegramFake]:
    fake = TelegramFake(TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture
def make_bot(server: TelegramFake) -> Iterator[Callable[..., TelegramBot]]:
    bots: list[TelegramBot] = []

    def make(
        view: Any = None,
        *,
        chat_ids: list[int] | None = None,
        token: str = TOKEN,
        start: bool = True,
        start_timeout_s: float = 10.0,
        **kw: Any,
    ) -> TelegramBot:
        config = TelegramConfig(enabled=True, chat_ids=chat_ids or [CHAT], base_url=server.base_url)
        bot = TelegramBot(config, token, view if view is not None else FakeRun(), poll_timeout_s=1, **kw)
        bots.append(bot)
        if start:
            bot.start(timeout_s=start_timeout_s)
        return bot

    yield make
    for bot in bots:
        bot.stop()


def ask(server: TelegramFake, text: str, chat: int = CHAT, timeout: float = 5.0) -> dict[str, Any]:
    """Send ``text`` from ``chat``; the bot's next message (or edit) there."""
    before = len(server.sent(chat))
    server.push_message(chat, text)
    server.wait_for(lambda: len(server.sent(chat)) > before, timeout, f"a reply to {text!r}")
    return server.sent(chat)[before]


def press(server: TelegramFake, prompt: dict[str, Any], which: int, chat: int = CHAT) -> dict[str, Any]:
    """Press button ``which`` (0 = yes, 1 = cancel) under ``prompt``; the bot's next edit or message."""
    before = len(server.sent(chat))
    data = prompt["reply_markup"]["inline_keyboard"][0][which]["callback_data"]
    server.push_callback(chat, prompt["message_id"], data)
    server.wait_for(lambda: len(server.sent(chat)) > before, 5.0, "the answer to the button")
    return server.sent(chat)[before]


# -- the commands ----------------------------------------------------------------------------------------
def test_status_says_the_run_runtime_equity_positions_and_risk(server, make_bot):
    make_bot()
    reply = ask(server, "/status")
    assert reply["text"].splitlines() == [
        "run paper-2024-06-03-a1: live, venue paper",
        "bar 2024-06-03T14:30:00+00:00",
        "equity 101,234.50, cash USD 55,000.00",
        "positions 2, open orders 1",
        "risk running",
    ]
    assert reply["parse_mode"] is None


def test_positions_lists_each_position_with_its_unrealised_pnl(server, make_bot):
    make_bot()
    assert ask(server, "/positions")["text"].splitlines() == [
        "2 open positions",
        "SPY 50 @ 520.00, last 531.25, value 26,562.50, P&L +562.50",
        "QQQ 40 @ 455.00, last 450.00, value 18,000.00, P&L -200.00",
    ]


def test_pnl_gives_total_day_week_month_and_na_where_unknown(server, make_bot):
    make_bot()
    assert ask(server, "/pnl")["text"].splitlines() == [
        "equity 101,234.50 (start 100,000.00)",
        "total +1,234.50 (+1.23%)",
        "day +120.00, week -80.25, month n/a",
    ]


def test_help_and_start_list_every_command_and_the_phone_menu_is_set(server, make_bot):
    make_bot()
    for word in ("/help", "/start"):
        text = ask(server, word)["text"]
        for name, _ in COMMANDS:
            assert f"/{name} - " in text
    assert [c["command"] for c in server.commands] == [name for name, _ in COMMANDS]


def test_pause_and_resume_queue_a_command_with_the_reason_and_source_telegram(server, make_bot):
    run = FakeRun()
    make_bot(run)
    assert ask(server, "/pause lunch break")["text"] == (
        "queued pause (command 1): applies at the runtime's next bar-time"
    )
    assert (
        ask(server, "/resume")["text"] == "queued resume (command 2): applies at the runtime's next bar-time"
    )
    assert run.commands == [
        ("pause", "lunch break", "telegram"),
        ("resume", "/resume from telegram", "telegram"),
    ]


def test_kill_queues_nothing_until_the_yes_button_is_pressed(server, make_bot):
    run = FakeRun()
    make_bot(run)
    prompt = ask(server, "/kill spread blew out")
    buttons = prompt["reply_markup"]["inline_keyboard"][0]
    assert [b["text"] for b in buttons] == ["Yes, kill", "Cancel"]
    assert "Reason: spread blew out" in prompt["text"] and "within 60 s" in prompt["text"]
    time.sleep(0.3)  # the bot had the time to (wrongly) queue something
    assert run.commands == []

    done = press(server, prompt, 0)
    assert run.commands == [("kill", "spread blew out", "telegram")]
    assert done["method"] == "editMessageText" and done["message_id"] == prompt["message_id"]
    assert done["text"] == "queued kill (command 1): applies at the runtime's next bar-time"
    assert done["reply_markup"] is None  # the buttons are gone
    server.wait_for(lambda: server.answers(), 5.0, "the callback answered")


def test_cancel_queues_nothing(server, make_bot):
    run = FakeRun()
    make_bot(run)
    prompt = ask(server, "/kill")
    assert press(server, prompt, 1)["text"] == "cancelled: no kill queued"
    assert run.commands == []


def test_an_expired_confirmation_queues_nothing(server, make_bot):
    run, clock = FakeRun(), Clock()
    make_bot(run, clock=clock)
    prompt = ask(server, "/kill")
    clock.now += 61.0
    text = press(server, prompt, 0)["text"]
    assert text == "confirmation expired after 60 s: nothing queued; send /kill again"
    assert run.commands == []


def test_a_used_button_cannot_queue_the_command_twice(server, make_bot):
    run = FakeRun()
    make_bot(run)
    prompt = ask(server, "/kill")
    press(server, prompt, 0)
    again = press(server, prompt, 0)
    assert again["text"] == "this button is no longer valid (already used or unknown): nothing queued"
    assert [c[0] for c in run.commands] == ["kill"]


def test_close_all_needs_its_button_too(server, make_bot):
    run = FakeRun()
    make_bot(run)
    prompt = ask(server, "/close_all take profits")
    assert [b["text"] for b in prompt["reply_markup"]["inline_keyboard"][0]] == ["Yes, close all", "Cancel"]
    assert run.commands == []
    press(server, prompt, 0)
    assert run.commands == [("close_all", "take profits", "telegram")]


def test_explain_shows_the_intent_the_verdict_with_each_check_and_the_orders(server, make_bot):
    make_bot()
    assert ask(server, "/explain trend-SPY-d12")["text"].splitlines() == [
        "decision trend-SPY-d12 (SPY)",
        "intent: entry buy at 520.00, fast MA crossed above slow",
        "verdict: resized 50 of 80 - position_pct cap",
        "  ok   daily_loss_pct: 0.1 vs limit 3",
        "  FAIL position_pct: 41.6 vs limit 25",
        "order trend-SPY-20240603T143000-e1: buy 50 filled",
        "1 order(s), 1 fill(s)",
    ]


def test_explain_of_an_unknown_id_says_so_and_suggests_up_to_three(server, make_bot):
    make_bot()
    assert ask(server, "/explain trend-SPY-d99")["text"].splitlines() == [
        "no decision trend-SPY-d99",
        "did you mean: trend-SPY-d12, trend-SPY-d13, trend-SPY-d14",
    ]


def test_explain_without_an_id_gives_its_usage(server, make_bot):
    run = FakeRun()
    make_bot(run)
    assert ask(server, "/explain")["text"].startswith("usage: /explain <decision id>")
    assert not any(r.startswith("decision") for r in run.reads)


def test_an_unknown_command_or_plain_text_gets_the_short_help(server, make_bot):
    make_bot()
    assert ask(server, "/moon")["text"].startswith("unknown command /moon. Commands: /status /positions")
    assert ask(server, "hello bot")["text"].startswith("I only take commands. Commands: /status")


def test_reply_text_is_plain_so_markup_in_a_reason_is_not_interpreted(server, make_bot):
    run = FakeRun()
    make_bot(run)
    prompt = ask(server, "/kill *bold* [x](http://evil.example) <b>")
    assert "*bold* [x](http://evil.example) <b>" in prompt["text"]
    assert all(s["parse_mode"] is None for s in server.sent(CHAT))


def test_when_the_runtime_is_not_live_every_reply_says_so(server, make_bot):
    run = FakeRun(live=False)
    make_bot(run)
    for word in ("/status", "/positions", "/pnl", "/explain trend-SPY-d12", "/help", "/moon"):
        assert ask(server, word)["text"].startswith("runtime not running (stopped): "), word
    for word in ("/pause", "/resume"):
        assert ask(server, word)["text"].endswith("\n" + NOT_LIVE_COMMAND), word
    prompt = ask(server, "/kill")
    assert prompt["text"].endswith("\n" + NOT_LIVE_COMMAND)
    assert press(server, prompt, 0)["text"].endswith("\n" + NOT_LIVE_COMMAND)


def test_a_view_that_fails_gets_a_clear_reply_and_the_bot_goes_on(server, make_bot):
    class Broken(FakeRun):
        def positions(self) -> list[dict[str, Any]]:
            raise LookupError("no journal at /tmp/j.sqlite")

    make_bot(Broken())
    assert ask(server, "/positions")["text"] == "/positions failed: LookupError: no journal at /tmp/j.sqlite"
    assert ask(server, "/status")["text"].startswith("run paper-2024-06-03-a1")


def test_with_a_real_run_view_a_confirmed_kill_is_journaled_with_source_telegram(server, make_bot, tmp_path):
    path = tmp_path / "journal.sqlite"
    SqliteJournal(path).close()  # a journal no runtime ran on yet
    make_bot(RunView(path))
    status = ask(server, "/status")["text"].splitlines()
    assert status[0] == "runtime not running (never ran): these are the last values it recorded"
    assert status[1] == "run (none): never ran"
    prompt = ask(server, "/kill broker outage")
    assert press(server, prompt, 0)["text"].endswith("\n" + NOT_LIVE_COMMAND)
    journal = SqliteJournal(path, create=False)
    try:
        commands = journal.commands()
    finally:
        journal.close()
    assert [(c.action, c.reason, c.source, c.applied_at) for c in commands] == [
        ("kill", "broker outage", "telegram", None)
    ]


# -- the allow-list ----------------------------------------------------------------------------------------
def test_an_unknown_chat_gets_no_answer_never_reaches_the_run_and_is_logged(server, make_bot):
    run = FakeRun()
    make_bot(run)
    prompt = ask(server, "/kill")
    with capture_logs() as events:
        server.push_message(STRANGER, "/status")
        server.push_message(STRANGER, "/pause hacked")
        server.push_callback(
            STRANGER, prompt["message_id"], prompt["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        )
        ask(server, "/pnl")  # updates are handled in order: the stranger's are done when this is answered
    assert server.sent(STRANGER) == []
    assert run.commands == []
    assert run.reads.count("status") == 2  # the /kill prompt's and /pnl's own note, none for the stranger
    refused = [e for e in events if e["event"] == "telegram.refused"]
    assert [(e["chat_id"], e["what"]) for e in refused] == [
        (STRANGER, "message"),
        (STRANGER, "message"),
        (STRANGER, "button"),
    ]
    assert press(server, prompt, 0)["text"].startswith("queued kill")  # the real button still works


def test_malformed_and_odd_updates_do_not_stop_the_bot(server, make_bot):
    run = FakeRun()
    make_bot(run)
    with capture_logs() as events:
        server.push_raw({"message": {"text": "/kill no chat no date"}})  # cannot be parsed
        server.push_raw({"message": {"message_id": 5, "date": 1, "chat": {"id": CHAT, "type": "private"}}})
        server.push_callback(CHAT, 999, "rubbish-without-colon")
        server.push_callback(CHAT, 999, "yes:not-a-pending-key")
        server.push_message(CHAT, "/status")
        server.wait_for(
            lambda: any(t.startswith("run paper-2024-06-03-a1") for t in server.texts(CHAT)), 5.0, "/status"
        )
    assert server.texts(CHAT) == [  # a button under a message the bot cannot edit: a new message
        "this button is no longer valid (already used or unknown): nothing queued",
        "this button is no longer valid (already used or unknown): nothing queued",
        server.texts(CHAT)[-1],
    ]
    assert run.commands == []
    assert any(e["event"] == "telegram.malformed_update" for e in events)
    assert sum(e["event"] == "telegram.button_unknown" for e in events) == 2
    assert server.pending_updates() <= 1  # the bad one was confirmed, not fetched again forever


# -- notifications -----------------------------------------------------------------------------------------
def test_warning_and_critical_events_reach_every_chat_and_info_does_not(server, make_bot):
    bot = make_bot(chat_ids=[CHAT, OTHER_CHAT], run_id="paper-1")
    bus = OpsBus(run_id="paper-1")
    bus.subscribe(bot)
    bus.emit("fill", "filled SPY buy 50 @ 520", fields={"symbol": "SPY"})
    bus.emit("order", "metrics only")  # level None: never sent
    bus.emit("feed.stale", "SPY data is 400 s late", "last bar 14:30")
    bus.emit("risk.halt", "drawdown 12% > 10%: trading halted")
    for chat in (CHAT, OTHER_CHAT):
        server.wait_for(lambda c=chat: len(server.sent(c)) >= 2, 5.0, f"two notifications in {chat}")
    time.sleep(0.3)
    for chat in (CHAT, OTHER_CHAT):
        assert server.texts(chat) == [
            "[WARNING] SPY data is 400 s late\nlast bar 14:30\nrun paper-1",
            "[CRITICAL] drawdown 12% > 10%: trading halted\nrun paper-1",
        ]
    assert bot.delivered == 4


def test_notify_returns_at_once_drops_beyond_its_queue_and_never_raises(make_bot):
    bot = make_bot(start=False, queue_size=3)
    ev = OpsEvent("risk.halt", "halted")
    t0 = time.perf_counter()
    for _ in range(10):
        bot(ev)
    bot.notify("not an event")  # type: ignore[arg-type]
    assert time.perf_counter() - t0 < 0.5
    assert bot.dropped == 7


def test_notifications_queued_before_start_are_sent_once_it_connects(server, make_bot):
    bot = make_bot(start=False)
    bot(OpsEvent("run.start", "started", level="warning"))
    bot.start(timeout_s=10.0)
    server.wait_for(lambda: server.texts(CHAT), 5.0, "the queued notification")
    assert server.texts(CHAT) == ["[WARNING] started"]


# -- faults --------------------------------------------------------------------------------------------------
def test_a_bot_api_answering_500_for_a_while_is_retried_and_the_bot_recovers(server, make_bot):
    bot = make_bot()
    with capture_logs() as events:
        server.fail(500)
        server.push_message(CHAT, "/status")
        server.wait_for(lambda: server.failed >= 2, 10.0, "two failed polls")
        server.recover()
        server.wait_for(lambda: server.texts(CHAT), 10.0, "the reply after recovery")
    assert server.texts(CHAT)[0].startswith("run paper-2024-06-03-a1")
    assert any(e["event"] == "telegram.poll_failed" for e in events)
    assert bot.connected


def test_a_reply_the_bot_api_refuses_with_a_5xx_is_sent_again(server, make_bot):
    make_bot()
    server.fail_next("sendMessage", 1, status=503)
    with capture_logs() as events:
        reply = ask(server, "/pnl", timeout=5.0)
    assert reply["text"].startswith("equity 101,234.50")
    assert server.calls("sendMessage") == 2
    assert [e["event"] for e in events if e["event"].startswith("telegram.reply")] == ["telegram.reply_retry"]


def test_a_bot_api_failing_at_start_does_not_fail_start_and_the_bot_connects_later(server, make_bot):
    server.fail(502, "Bad Gateway")
    with capture_logs() as events:
        bot = make_bot(start_timeout_s=0.5)
    assert not bot.connected
    assert any(e["event"] == "telegram.unreachable" for e in events)
    server.recover()
    server.wait_for(lambda: bot.connected, 10.0, "the bot connected")
    assert ask(server, "/pnl")["text"].startswith("equity 101,234.50")


def test_a_bot_api_gone_entirely_is_logged_and_stop_stays_prompt(server, make_bot):
    bot = make_bot()
    with capture_logs() as events:
        server.stop()  # connection refused from now on
        TelegramFake.wait_for(
            lambda: any(e["event"] == "telegram.poll_failed" for e in events), 10.0, "a failed poll"
        )
        bot.notify(OpsEvent("risk.halt", "halted while Telegram is gone"))
        t0 = time.perf_counter()
        bot.stop()
    assert time.perf_counter() - t0 < 5.0
    assert any(e["event"] == "telegram.notify_dropped" for e in events)  # one last try, then dropped


def test_a_wrong_token_fails_start_with_one_clear_error_without_the_token(make_bot):
    wrong = "7000000001:AAH-this-token-is-not-the-one-12345"
    with pytest.raises(TelegramAuthError) as err:
        make_bot(token=wrong)
    text = str(err.value)
    assert "refused the token in HFLITE_TELEGRAM_TOKEN" in text and "@BotFather" in text
    assert wrong not in text


def test_no_token_or_no_chat_is_refused_at_construction(server):
    with pytest.raises(ValueError, match="set HFLITE_TELEGRAM_TOKEN"):
        TelegramBot(TelegramConfig(chat_ids=[CHAT]), "  ", FakeRun())
    with pytest.raises(ValueError, match="chat_ids is empty"):
        TelegramBot(TelegramConfig(), TOKEN, FakeRun())


def test_stop_is_prompt_and_idempotent(make_bot):
    bot = make_bot()
    t0 = time.perf_counter()
    bot.stop()
    bot.stop()
    assert time.perf_counter() - t0 < 3.0
    assert not bot.connected


@pytest.fixture
def debug_logs() -> Iterator[None]:
    logs.configure("DEBUG")
    yield
    logs.configure("WARNING")


def test_the_token_never_appears_in_any_log(server, make_bot, debug_logs, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    bot = make_bot()
    ask(server, "/status")
    server.fail(500)
    server.wait_for(lambda: server.failed >= 1, 10.0, "a failed poll")
    server.recover()
    ask(server, "/pnl", timeout=10.0)
    bot.stop()
    with pytest.raises(TelegramAuthError):
        make_bot(token=TOKEN.replace("AAH", "BBX"))
    text = "\n".join([caplog.text, *(r.getMessage() for r in caplog.records), capsys.readouterr().err])
    assert "/bot***/getUpdates" in text  # httpx did log the URLs, masked
    assert TOKEN not in text
    assert TOKEN.replace("AAH", "BBX") not in text
    assert redact.redact(f"x {TOKEN} y") == "x *** y"
