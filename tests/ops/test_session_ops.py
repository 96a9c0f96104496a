"""A paper session with the whole ops kit on (alerts to a local SMTP server and a webhook, the
Telegram bot against the local Bot API, metrics): what the runtime emits reaches each channel,
every alert is journaled, a Telegram /pause (confirmed) takes effect at the next bar-time, and a
failing channel never holds the trading loop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from hflite.cli import app
from hflite.config import Settings
from hflite.engine.live import trade
from hflite.execution.oms import SqliteJournal
from hflite.ops.events import OpsBus
from hflite.ops.watch import OpsKit, Watch, daily_summary
from tests.ops.telegram_server import TelegramFake
from tests.ops.webhooks import SmtpServer, WebhookServer
from tests.test_trading_run import _paper

BOT_TOKEN = "123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQ"
CHAT = 424242


def _settings(store, webhook: str, smtp: str | None, **extra) -> Settings:
    channels = [{"name": "hook", "url_env": "HFLITE_ALERT_HOOK", "levels": ["info", "warning", "critical"]}]
    if smtp is not None:
        channels.append({"name": "mail", "url_env": "HFLITE_ALERT_MAIL", "levels": ["critical"]})
    return _paper(
        store,
        alerts={"channels": channels, "dedup_s": 0, "per_minute": 10_000, "daily_summary": None},
        **extra,
    )


@pytest.fixture
def home_with_sample(tmp_path: Path, sample_store) -> Path:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "data").symlink_to(sample_store.root, target_is_directory=True)
    return tmp_path


def test_a_session_alerts_every_channel_and_journals_every_alert(
    sample_store, tmp_path: Path, monkeypatch
) -> None:
    with WebhookServer() as hook, SmtpServer("ops", "mail-pass-Xy12") as mail:
        monkeypatch.setenv("HFLITE_ALERT_HOOK", hook.url("json"))
        monkeypatch.setenv("HFLITE_ALERT_MAIL", mail.url("desk@example.test"))
        settings = _settings(sample_store, "hook", "mail")
        path = tmp_path / "j.sqlite"
        kit = OpsKit(settings, path)
        kit.start()
        try:
            out = asyncio.run(trade(settings, sample_store, feed="recorded", journal_path=path, ops=kit))
        finally:
            kit.stop()
        fills = len(out.result.fills)
        j = SqliteJournal(path, create=False)
        try:
            alerts = j.events_of("alert")
        finally:
            j.close()
        kinds = [a["kind"] for a in alerts]
        assert kinds[0] == "run.start" and kinds[-1] == "run.stop"
        assert kinds.count("fill") + kinds.count("stop_out") == fills
        # the webhook got every alert the journal holds (info and up), in order
        hits = hook.wait_for(len(alerts), timeout=30)
        titles = [h.json["title"] for h in hits]
        assert len(titles) == len(alerts)
        assert titles[0].startswith("[hflite paper] INFO") and "started" in titles[0]
        stats = kit.alerter.stats()
        assert stats["hook"]["sent"] == len(alerts) and stats["hook"]["failed"] == 0
        # the mail channel takes critical only: a clean run sends it nothing
        assert stats["mail"]["sent"] == 0 and mail.mails == []


def test_a_channel_that_never_answers_does_not_slow_the_loop(
    sample_store, tmp_path: Path, monkeypatch
) -> None:
    timings = {}
    for name, delay in (("fast", 0.0), ("stuck", 30.0)):
        with WebhookServer(delay_s=delay) as hook:
            monkeypatch.setenv("HFLITE_ALERT_HOOK", hook.url("json"))
            settings = _settings(sample_store, "hook", None)
            path = tmp_path / f"{name}.sqlite"
            kit = OpsKit(settings, path)
            kit.start()
            t0 = time.perf_counter()
            try:
                asyncio.run(trade(settings, sample_store, feed="recorded", journal_path=path, ops=kit))
            finally:
                timings[name] = time.perf_counter() - t0
                kit.alerter.close(timeout=0.5)
    # the stuck channel holds every delivery for 30 s; the run does not wait for any of them
    assert timings["stuck"] < timings["fast"] * 1.5 + 2.0, timings


def test_a_session_with_everything_on_is_killed_from_telegram(
    sample_store, tmp_path: Path, monkeypatch
) -> None:
    """The API, Telegram (local Bot API), alerts (local webhook) and metrics, all on one paper session:
    the API and the bot read it while it trades, a confirmed /kill from Telegram stops it at the next
    bar-time, the webhook hears the kill, and `hflite status` names the command's source."""
    fake = TelegramFake(BOT_TOKEN).start()
    hook = WebhookServer().__enter__()
    try:
        monkeypatch.setenv("HFLITE_TELEGRAM_TOKEN", BOT_TOKEN)
        monkeypatch.setenv("HFLITE_API_TOKEN", "session-api-token-0123456789")
        monkeypatch.setenv("HFLITE_ALERT_HOOK", hook.url("json"))
        settings = _paper(
            sample_store,
            telegram={"enabled": True, "chat_ids": [CHAT], "base_url": fake.base_url},
            runtime={"feed": "recorded", "speed": 86400.0 * 40},  # ~40 bar-times a second
            api={"port": 0},
            alerts={"channels": [{"name": "hook", "url_env": "HFLITE_ALERT_HOOK",
                                  "levels": ["warning", "critical"]}], "daily_summary": None},
        )  # fmt: skip
        path = tmp_path / "j.sqlite"
        kit = OpsKit(settings, path, api=True)
        lines = kit.start()
        url = next(x for x in lines if x.startswith("control API:")).split()[2]
        api = httpx.Client(base_url=url, headers={"Authorization": "Bearer session-api-token-0123456789"})
        done = threading.Event()

        def run() -> None:
            try:
                asyncio.run(trade(settings, sample_store, feed="recorded", speed=86400.0 * 40,
                                  journal_path=path, ops=kit))  # fmt: skip
            finally:
                done.set()

        t = threading.Thread(target=run)
        t.start()
        try:
            fake.wait_for(lambda: path.exists() and kit.view.status()["bar_ts"], timeout=60, what="a bar")
            assert api.get("/status").json()["runtime"] == "live"
            assert "hflite_bars_total" in api.get("/metrics").text
            fake.push_message(CHAT, "/status")
            reply = fake.wait_for(lambda: [x for x in fake.texts(CHAT) if "equity" in x.lower()], timeout=10)
            assert "paper" in reply[-1]
            fake.push_message(CHAT, "/kill stop it")
            prompt = fake.wait_for(lambda: [m for m in fake.sent(CHAT) if m.get("reply_markup")], timeout=10)[
                -1
            ]
            assert kit.view.commands() == [], "nothing queued before the button"
            markup = prompt["reply_markup"]
            markup = json.loads(markup) if isinstance(markup, str) else markup
            buttons = [b for row in markup["inline_keyboard"] for b in row]
            yes = next(b for b in buttons if b["text"].startswith("Yes"))
            fake.push_callback(CHAT, prompt["message_id"], yes["callback_data"])
            cmd = fake.wait_for(lambda: kit.view.commands(), timeout=10)[0]
            assert (cmd["action"], cmd["source"], cmd["reason"]) == ("kill", "telegram", "stop it")
            applied = fake.wait_for(lambda: kit.view.commands()[0]["applied_at"], timeout=30)
            assert applied is not None
            assert done.wait(60), "a kill stops the runtime once flat"
            status = kit.view.status()
            assert status["risk"] == "killed" and "stop it [via telegram]" in status["risk_reason"]
            shown = CliRunner().invoke(app, ["status", "--journal", str(path)], env={"COLUMNS": "250"})
            assert shown.exit_code == 0, shown.output
            assert "kill from telegram: stop it, applied at" in shown.output
            titles = [h.json["title"] for h in hook.wait_for(1, timeout=10)]
            assert any("kill" in t and "WARNING" in t for t in titles), titles
        finally:
            t.join(60)
            kit.stop()
    finally:
        fake.stop()
        hook.__exit__(None, None, None)


def test_the_daily_summary_is_built_from_the_book_once_a_day() -> None:
    book = {
        "equity": 101_250.0, "positions": {"BTC-USD": {"qty": 0.5, "avg_price": 40_000.0, "last": 42_000.0}},
        "risk": "running", "halted": "", "feed": {"EURUSD": "EURUSD delayed: 503"},
        "risk_check": {"pnl": {"day": 250.0},
                       "limits": [{"name": "drawdown", "utilisation": 0.9},
                                  {"name": "open_positions", "utilisation": 0.5}]},
    }  # fmt: skip
    ev = daily_summary(book, "paper", "2026-12-07")
    assert ev.kind == "daily.summary" and ev.level == "info"
    assert ev.fields["pnl"] == 250.0 and ev.fields["pnl_pct"] == pytest.approx(250 / 101_000 * 100)
    assert ev.fields["anomalies"] == ["limit drawdown at 90%", "EURUSD: EURUSD delayed: 503"]
    assert "BTC-USD 0.5" in ev.body and "day P&L +250.00" in ev.body

    class Clock:
        t = 1_765_100_000.0  # 2025-12-07 09:33 UTC = 04:33 New York

    bus = OpsBus("paper")
    seen = []
    bus.subscribe(seen.append)
    settings = Settings(run={"name": "paper", "symbols": ["SPY"], "start": "2024-01-02", "end": "2024-06-28"},
                        strategy={"name": "trend"}, alerts={"daily_summary": "17:15"})  # fmt: skip
    watch = Watch(bus, settings, clock=lambda: Clock.t)
    watch._daily_summary(book, 0)
    assert seen == []
    Clock.t += 13 * 3600  # 17:33 New York
    watch._daily_summary(book, 0)
    watch._daily_summary(book, 0)
    assert [e.kind for e in seen] == ["daily.summary"], "once a day"


def test_a_broker_session_reports_venue_latency_errors_and_stream_drops(home_with_sample: Path) -> None:
    """Against the fake broker dropping its event stream every 5 events: every send is timed into
    the metrics, and each drop is alerted (warning) then the reconnect (info), before reconciling."""
    from hflite.config import load_settings
    from hflite.execution.venues.fakebroker import BehaviourScript, FakeBroker, FakeBrokerServer
    from tests.test_run_cli import KEY_ID, KEYS, SECRET, broker_config

    home = home_with_sample
    plain = broker_config(home, "http://127.0.0.1:1", run={"start": "2024-06-03"})
    broker = FakeBroker.from_settings(load_settings(plain), script=BehaviourScript(drop_stream_every=5))
    with FakeBrokerServer(broker, "127.0.0.1", 0, key_id=KEY_ID, secret=SECRET) as srv:
        config = broker_config(home, srv.url, run={"start": "2024-06-03"})
        for k, v in KEYS.items():
            os.environ[k] = v
        try:
            settings = load_settings(config)
            path = home / "j.sqlite"
            kit = OpsKit(settings, path)
            seen: list = []
            kit.bus.subscribe(seen.append)
            kit.start()
            try:
                out = asyncio.run(trade(settings, feed="recorded", journal_path=path, ops=kit))
            finally:
                kit.stop()
        finally:
            for k in KEYS:
                os.environ.pop(k, None)
    assert out.result is not None and len(out.result.fills) > 0
    requests = [e for e in seen if e.kind == "venue.request"]
    assert {e.fields["op"] for e in requests} >= {"submit"}
    assert all(e.fields["venue"] == "fakebroker" and e.fields["latency_s"] > 0 for e in requests)
    drops = [e for e in seen if e.kind == "venue.disconnect"]
    backs = [e for e in seen if e.kind == "venue.reconnect"]
    assert drops and len(drops) == len(backs), "each drop alerted once, with its reconnect"
    kit.metrics.on_book(kit.latest_book, kit.latest_book.get("risk_check"))
    text = kit.metrics.render()[0].decode()
    count = re.search(r'hflite_venue_request_seconds_count\{op="submit",venue="fakebroker"\} (\d+)', text)
    assert count and int(float(count.group(1))) == sum(1 for e in requests if e.fields["op"] == "submit")


def test_live_model_use_is_logged_to_mlflow(sample_store, tmp_path: Path) -> None:
    """The models that made the decisions of the bar-times this process traded, counted per model
    id, become an MLflow run in the registry's ``hflite-live`` experiment."""
    pytest.importorskip("mlflow")
    import pandas as pd
    from mlflow.tracking import MlflowClient

    settings = _paper(sample_store, ai={"registry_dir": str(tmp_path / "models")})
    kit = OpsKit(settings, tmp_path / "j.sqlite")
    idx = pd.date_range("2024-01-01", periods=6, freq="D", tz="UTC")
    frame = pd.DataFrame({"model_id": ["", "lgbm-w1", "lgbm-w1", "lgbm-w2", "lgbm-w2", "lgbm-w2"]}, index=idx)

    class Prep:
        brain = type("Brain", (), {"decisions": {"SPY": frame, "QQQ": frame.iloc[:2]}})()
        llm = None

    watch = kit.watch(settings, None, Prep())
    watch.first_ts = int(idx[2].value)  # the process decided from the third bar on
    assert kit.models_used() == {"lgbm-w1": 1, "lgbm-w2": 3}
    kit.stop()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'models' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("hflite-live")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.metrics == {"decisions.lgbm-w1": 1.0, "decisions.lgbm-w2": 3.0}
    assert run.data.tags["hflite.run"] == "paper" and run.data.tags["hflite.model.lgbm-w2"] == "used"
    assert run.data.params["venue"] == "paper"


def test_an_alert_raised_off_the_trading_thread_is_journaled_by_it(sample_store, tmp_path: Path) -> None:
    """An LLM worker thread's fallback alert reaches the channels at once but is written to the
    journal (whose connection belongs to the trading thread) at the next bar-time."""
    from types import SimpleNamespace

    settings = _paper(sample_store, alerts={"daily_summary": None})
    journal = SqliteJournal(tmp_path / "j.sqlite")
    try:
        bus = OpsBus("paper")
        heard = []
        bus.subscribe(heard.append)
        watch = Watch(bus, settings, journal)
        worker = threading.Thread(target=lambda: bus.emit("llm.fallback", "LLM fallback (ollama)", "timeout"))
        worker.start()
        worker.join()
        assert [e.kind for e in heard] == ["llm.fallback"] and journal.events_of("alert") == []
        engine = SimpleNamespace(fills=[], decisions=[], risk=SimpleNamespace(events=[]), orders={})
        watch.after(engine, 1, {}, None)
        assert [a["kind"] for a in journal.events_of("alert")] == ["llm.fallback"]
    finally:
        journal.close()
