"""Alerts through apprise (issue 16): delivery to a local SMTP server and local webhooks, routing, dedup,
rate limit, retries, a slow or dead channel that never blocks trading, bad URLs, and no secret anywhere.

Every channel is a real apprise URL pointed at a server on 127.0.0.1 (tests/ops/webhooks.py); nothing
leaves the machine.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from hflite import logs, redact
from hflite.cli.alerts import alerts_app
from hflite.config import AlertChannelConfig, AlertsConfig
from hflite.ops.alerts import AlertConfigError, Alerter, format_alert, send_test, with_timeouts
from hflite.ops.events import OpsBus, OpsEvent
from tests.ops.webhooks import SmtpServer, WebhookServer, closed_port

#: Distinctive secrets: a webhook token in a URL path, an SMTP password, a Discord webhook token.
HOOK_TOKEN = "hookTOKEN0x7Qw9Er4Ty"
SMTP_PASSWORD = "smtpPASS0x3Zx8Cv1Bn"
DISCORD_ID = "112233445566778899"
DISCORD_TOKEN = "discTOKEN0x5Gh2Jk8LmNpQrStUvWx"
SECRETS = (HOOK_TOKEN, SMTP_PASSWORD, DISCORD_TOKEN)


def alerts_config(*channels: dict[str, Any], **kw: Any) -> AlertsConfig:
    """A fast ``[alerts]``: short backoff and timeout, no dedup unless asked."""
    base: dict[str, Any] = {"dedup_s": 0, "retries": 0, "retry_base_s": 0.05, "timeout_s": 2.0}
    base.update(kw)
    return AlertsConfig(channels=[AlertChannelConfig(**c) for c in channels], **base)


def event(kind: str = "risk.halt", title: str = "halted", **kw: Any) -> OpsEvent:
    return OpsEvent(kind, title, kw.pop("body", f"{title} (body)"), run_id=kw.pop("run_id", "run-7"), **kw)


@pytest.fixture(autouse=True)
def fresh_redactor() -> Iterator[None]:
    """Each test registers its own secrets; logging is put back as it was after."""
    redact.clear()
    yield
    redact.clear()
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()


@contextlib.contextmanager
def captured(level: str = "DEBUG", json: bool = False) -> Iterator[io.StringIO]:
    """Everything logged (structlog and stdlib, every thread) and printed inside, as ``--log-level``
    configures it."""
    out = io.StringIO()
    with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
        logs.configure(level, json=json)
        yield out


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds (the workers report after the server has the request)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def done(alerter: Alerter, channel: str, count: int) -> bool:
    """Whether ``channel`` has a final outcome (sent or failed) for ``count`` alerts."""
    st = alerter.stats()[channel]
    return bool(st["sent"] + st["failed"] >= count)


@contextlib.contextmanager
def running(alerter: Alerter) -> Iterator[Alerter]:
    try:
        yield alerter
    finally:
        alerter.close(timeout=1.0)


# -- delivery to each kind of channel ---------------------------------------------------------------------


def test_email_channel_delivers_a_critical_alert_through_smtp() -> None:
    with SmtpServer("alerts", SMTP_PASSWORD) as smtp:
        env = {"HFLITE_ALERT_EMAIL": smtp.url("ops@example.test")}
        cfg = alerts_config({"name": "email", "url_env": "HFLITE_ALERT_EMAIL", "levels": ["critical"]})
        with running(Alerter(cfg, env, run_id="run-7")) as alerter:
            alerter(
                event("risk.halt", "trading halted", body="daily loss limit hit", fields={"reason": "dl"})
            )
            mails = smtp.wait_for(1)
    assert len(mails) == 1
    assert mails[0].subject == "[hflite run-7] CRITICAL trading halted"
    assert mails[0].rcpt_tos == ["ops@example.test"]
    assert "daily loss limit hit" in mails[0].text
    assert "kind: risk.halt" in mails[0].text
    assert "reason: dl" in mails[0].text
    assert smtp.logins == [("alerts", True)]


def test_sms_through_an_email_to_sms_gateway_is_a_mail_to_the_number() -> None:
    with SmtpServer("alerts", SMTP_PASSWORD) as smtp:
        env = {"HFLITE_ALERT_SMS": smtp.url("15551234567@sms.gateway.test")}
        cfg = alerts_config({"name": "sms", "url_env": "HFLITE_ALERT_SMS", "levels": ["critical"]})
        with running(Alerter(cfg, env)) as alerter:
            alerter(event("reconcile.diff", "position differs", body="AAPL: 10 here, 12 at the venue"))
            mails = smtp.wait_for(1)
    assert [m.rcpt_tos for m in mails] == [["15551234567@sms.gateway.test"]]
    assert mails[0].subject == "[hflite run-7] CRITICAL position differs"
    assert "AAPL: 10 here, 12 at the venue" in mails[0].text


@pytest.mark.parametrize("scheme", ["json", "form"])
def test_webhook_channel_posts_title_body_and_type(scheme: str) -> None:
    with WebhookServer() as hook:
        env = {"HFLITE_ALERT_HOOK": hook.url(scheme, f"/alerts/{HOOK_TOKEN}")}
        cfg = alerts_config({"name": "hook", "url_env": "HFLITE_ALERT_HOOK", "levels": ["warning"]})
        with running(Alerter(cfg, env, run_id="r1")) as alerter:
            alerter(event("feed.stale", "SPY feed stale", body="no bar for 180 s", run_id=""))
            hits = hook.wait_for(1)
    assert len(hits) == 1
    payload = hits[0].json if scheme == "json" else hits[0].form
    assert hits[0].path == f"/alerts/{HOOK_TOKEN}"
    assert payload["title"] == "[hflite r1] WARNING SPY feed stale"
    assert payload["message"].startswith("no bar for 180 s\n")
    assert payload["type"] == "warning"


def test_discord_url_is_accepted_and_its_payload_reaches_a_discord_compatible_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """apprise's discord:// always posts to discord.com; the plugin's endpoint is pointed here instead,
    so the real Discord payload is delivered and checked."""
    from apprise.plugins.discord import NotifyDiscord

    with WebhookServer(default_status=204, answer=b"") as discord:
        monkeypatch.setattr(NotifyDiscord, "notify_url", f"http://127.0.0.1:{discord.port}/api/webhooks")
        env = {"HFLITE_ALERT_DISCORD": f"discord://{DISCORD_ID}/{DISCORD_TOKEN}"}
        cfg = alerts_config({"name": "discord", "url_env": "HFLITE_ALERT_DISCORD"})
        with running(Alerter(cfg, env)) as alerter:
            alerter(event("stop_out", "AAPL stopped out", body="sold 10 at 180.5"))
            hits = discord.wait_for(1)
    assert [h.path for h in hits] == [f"/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}"]
    content = hits[0].json["content"]
    assert "[hflite run-7] WARNING AAPL stopped out" in content
    assert "sold 10 at 180.5" in content


def test_telegram_url_is_accepted_and_its_message_reaches_a_bot_api_compatible_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apprise.plugins.telegram import NotifyTelegram

    bot_token = "123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQ"
    with WebhookServer(answer=b'{"ok": true, "result": {"message_id": 1}}') as bot_api:
        monkeypatch.setattr(NotifyTelegram, "notify_url", f"http://127.0.0.1:{bot_api.port}/bot")
        env = {"HFLITE_ALERT_TELEGRAM": f"tgram://{bot_token}/-1001234567"}
        cfg = alerts_config({"name": "telegram", "url_env": "HFLITE_ALERT_TELEGRAM", "levels": ["info"]})
        with running(Alerter(cfg, env)) as alerter:
            alerter(event("run.start", "paper run started", body="venue paper, 3 symbols"))
            hits = bot_api.wait_for(1)
    assert [h.path for h in hits] == [f"/bot{bot_token}/sendMessage"]
    sent = hits[0].json
    assert str(sent["chat_id"]) == "-1001234567"
    assert "[hflite run-7] INFO paper run started" in sent["text"]
    assert "venue paper, 3 symbols" in sent["text"]


# -- routing, dedup, rate limit -----------------------------------------------------------------------------


def test_events_go_to_the_channels_whose_levels_and_kinds_take_them() -> None:
    with WebhookServer() as crit, WebhookServer() as fills, WebhookServer() as every:
        env = {"CRIT": crit.url(), "FILLS": fills.url(), "ALL": every.url()}
        cfg = alerts_config(
            {"name": "crit", "url_env": "CRIT", "levels": ["critical"]},
            {"name": "fills", "url_env": "FILLS", "levels": ["info"], "kinds": ["fill"]},
            {"name": "all", "url_env": "ALL", "levels": ["info", "warning", "critical"]},
        )
        with running(Alerter(cfg, env)) as alerter:
            alerter(event("fill", "bought 10 SPY"))
            alerter(event("risk.halt", "halted"))
            alerter(event("feed.stale", "SPY stale"))
            alerter(event("order", "order accepted"))  # metrics only: never alerted
            alerter(event("run.start", ""))  # no title: not alertable
            every.wait_for(3)
            fills.wait_for(1)
            crit.wait_for(1)
            time.sleep(0.2)  # anything misrouted would have arrived by now
    assert [h.json["title"] for h in crit.hits] == ["[hflite run-7] CRITICAL halted"]
    assert [h.json["title"] for h in fills.hits] == ["[hflite run-7] INFO bought 10 SPY"]
    assert sorted(h.json["type"] for h in every.hits) == ["failure", "info", "warning"]


def test_fills_are_not_alerted_when_fills_is_off() -> None:
    with WebhookServer() as hook:
        cfg = alerts_config({"name": "hook", "url_env": "HOOK", "levels": ["info"]}, fills=False)
        with running(Alerter(cfg, {"HOOK": hook.url()})) as alerter:
            alerter(event("fill", "bought 10 SPY"))
            alerter(event("run.stop", "run stopped"))
            hits = hook.wait_for(1)
            time.sleep(0.2)
    assert [h.json["title"] for h in hook.hits] == ["[hflite run-7] INFO run stopped"]
    assert len(hits) == 1


def test_the_same_alert_within_dedup_s_is_sent_once_and_counted() -> None:
    with WebhookServer() as hook:
        cfg = alerts_config({"name": "hook", "url_env": "HOOK"}, dedup_s=0.5)
        with running(Alerter(cfg, {"HOOK": hook.url()})) as alerter:
            for _ in range(3):
                alerter(event("feed.stale", "SPY stale", key="stale|SPY"))
            alerter(event("feed.stale", "QQQ stale", key="stale|QQQ"))
            hook.wait_for(2)
            time.sleep(0.6)  # the window has passed: the same key alerts again
            alerter(event("feed.stale", "SPY stale", key="stale|SPY"))
            hits = hook.wait_for(3)
            wait_until(lambda: done(alerter, "hook", 3))
            stats = alerter.stats()["hook"]
    assert [h.json["title"].split()[-2] for h in hits] == ["SPY", "QQQ", "SPY"]
    assert stats["deduped"] == 2
    assert stats["sent"] == 3


def test_alerts_beyond_the_rate_limit_wait_and_are_all_delivered() -> None:
    with WebhookServer() as hook:
        cfg = alerts_config({"name": "hook", "url_env": "HOOK"}, per_minute=2)
        with running(Alerter(cfg, {"HOOK": hook.url()}, rate_window_s=0.6)) as alerter:
            start = time.monotonic()
            for i in range(5):
                alerter(event("risk.limit", f"limit {i}"))
            hits = hook.wait_for(5, timeout=5.0)
            wait_until(lambda: done(alerter, "hook", 5))
            stats = alerter.stats()["hook"]
    assert [h.json["title"] for h in hits] == [f"[hflite run-7] WARNING limit {i}" for i in range(5)]
    offsets = [h.at - start for h in hits]
    assert offsets[1] < 0.5  # two within the window at once
    assert offsets[2] >= 0.55  # the third waits for the window to move
    assert offsets[4] >= 1.15  # the fifth for the window after
    assert stats["dropped"] == 0
    assert stats["delayed"] >= 2
    assert stats["sent"] == 5


# -- faults: a failing, slow, dead or full channel ---------------------------------------------------------


def test_a_failing_channel_is_retried_with_backoff_and_delivered() -> None:
    rows: list[dict[str, Any]] = []
    with WebhookServer(statuses=[500, 500]) as hook, captured("INFO") as out:
        cfg = alerts_config({"name": "hook", "url_env": "HOOK"}, retries=3, retry_base_s=0.05)
        with running(Alerter(cfg, {"HOOK": hook.url()}, record=rows.append)) as alerter:
            alerter(event("risk.breaker", "market breaker", key="breaker|all"))
            hits = hook.wait_for(3)
            wait_until(lambda: bool(rows))
            stats = alerter.stats()["hook"]
    assert len(hits) == 3
    assert hits[2].at - hits[1].at >= 0.1  # second backoff: 0.05 * 2, plus jitter
    assert stats == {
        "sent": 1,
        "failed": 0,
        "retried": 2,
        "deduped": 0,
        "dropped": 0,
        "delayed": 0,
        "queued": 0,
        "last_error": "",
    }
    assert rows == [
        {
            "channel": "hook",
            "kind": "risk.breaker",
            "level": "warning",
            "title": "[hflite run-7] WARNING market breaker",
            "key": "breaker|all",
            "outcome": "sent",
            "attempts": 3,
            "error": "",
        }
    ]
    text = out.getvalue()
    assert text.count("alert.retry") == 2
    assert "alert.sent" in text
    assert "dedup_key=breaker|all" in text
    assert "channel=hook" in text


def test_an_email_retry_waits_for_apprises_pacing_instead_of_timing_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """apprise spaces two emails of one channel (5.5 s; 0.6 s here): that wait is not counted against
    ``timeout_s``, so a retry soon after a failure is delivered."""
    from apprise.plugins.email.base import NotifyEmail

    monkeypatch.setattr(NotifyEmail, "request_rate_per_sec", 0.6)
    rows: list[dict[str, Any]] = []
    with SmtpServer("alerts", SMTP_PASSWORD, refuse_logins=1) as smtp:
        env = {"MAIL": smtp.url("ops@example.test")}
        cfg = alerts_config({"name": "mail", "url_env": "MAIL"}, retries=1, timeout_s=0.3)
        with running(Alerter(cfg, env, record=rows.append)) as alerter:
            alerter(event("risk.halt", "halted"))
            mails = smtp.wait_for(1)
            wait_until(lambda: bool(rows))
    assert [ok for _, ok in smtp.logins] == [False, True]
    assert len(mails) == 1
    assert [(r["outcome"], r["attempts"]) for r in rows] == [("sent", 2)]


def test_a_channel_that_never_answers_blocks_neither_the_listener_nor_another_channel() -> None:
    with WebhookServer(delay_s=5.0) as slow, WebhookServer() as healthy:
        cfg = alerts_config(
            {"name": "slow", "url_env": "SLOW"}, {"name": "healthy", "url_env": "OK"}, timeout_s=0.3
        )
        alerter = Alerter(cfg, {"SLOW": slow.url(), "OK": healthy.url()})
        bus = OpsBus(run_id="run-9")
        bus.subscribe(alerter)
        slow.wait_for(0)
        took: list[float] = []
        start = time.monotonic()
        for i in range(20):
            t0 = time.perf_counter()
            bus.emit("risk.limit", f"limit {i}")
            took.append(time.perf_counter() - t0)
        hits = healthy.wait_for(20, timeout=3.0)
        arrived_s = hits[-1].at - start if hits else float("inf")
        t0 = time.monotonic()
        undelivered = alerter.close(timeout=0.5)
        close_s = time.monotonic() - t0
    assert max(took) < 0.05
    assert len(hits) == 20
    assert arrived_s < 1.5
    assert len(slow.hits) >= 1  # the slow channel was tried...
    assert undelivered >= 10  # ...and most of its alerts were still waiting at close
    assert close_s < 1.5


def test_an_unreachable_channel_ends_failed_with_a_log_line_and_no_exception() -> None:
    rows: list[dict[str, Any]] = []
    env = {"DEAD": f"json://127.0.0.1:{closed_port()}/hook/{HOOK_TOKEN}"}
    cfg = alerts_config({"name": "dead", "url_env": "DEAD"}, retries=1, retry_base_s=0.05)
    with captured("INFO") as out:
        with running(Alerter(cfg, env, record=rows.append)) as alerter:
            alerter(event("venue.disconnect", "venue lost"))
            wait_until(lambda: bool(rows))
            stats = alerter.stats()["dead"]
    assert stats["failed"] == 1
    assert stats["retried"] == 1
    assert stats["sent"] == 0
    assert "127.0.0.1" in stats["last_error"]
    assert [(r["outcome"], r["attempts"]) for r in rows] == [("failed", 2)]
    text = out.getvalue()
    assert "alert.failed" in text
    assert "channel=dead" in text
    assert "Traceback" not in text
    assert HOOK_TOKEN not in text


def test_a_full_queue_drops_the_oldest_alerts_and_counts_them() -> None:
    rows: list[dict[str, Any]] = []
    with WebhookServer(delay_s=0.3) as hook:
        cfg = alerts_config({"name": "hook", "url_env": "HOOK"}, queue_max=2)
        with running(Alerter(cfg, {"HOOK": hook.url()}, record=rows.append)) as alerter:
            alerter(event("risk.limit", "limit 0"))
            hook.wait_for(1)  # the worker is busy sending the first
            for i in range(1, 5):
                alerter(event("risk.limit", f"limit {i}"))
            hits = hook.wait_for(3, timeout=5.0)
            wait_until(lambda: done(alerter, "hook", 3))
            stats = alerter.stats()["hook"]
    assert [h.json["title"].rsplit(" ", 1)[-1] for h in hits] == ["0", "3", "4"]
    assert stats["dropped"] == 2
    assert stats["sent"] == 3
    assert sorted(r["title"].rsplit(" ", 1)[-1] for r in rows if r["outcome"] == "dropped") == ["1", "2"]


def test_close_flushes_the_queue_within_its_timeout() -> None:
    with WebhookServer() as hook:
        cfg = alerts_config({"name": "hook", "url_env": "HOOK"})
        alerter = Alerter(cfg, {"HOOK": hook.url()})
        for i in range(10):
            alerter(event("risk.limit", f"limit {i}"))
        undelivered = alerter.close(timeout=5.0)
        alerter(event("risk.limit", "after close"))  # ignored, no error
        assert undelivered == 0
        assert len(hook.hits) == 10
        assert alerter.close() == 0
        assert alerter.stats()["hook"]["sent"] == 10


def test_the_listener_never_raises() -> None:
    rows: list[dict[str, Any]] = []

    def broken_journal(row: dict[str, Any]) -> None:
        rows.append(row)
        raise OSError("disk full")

    with WebhookServer() as hook:
        cfg = alerts_config({"name": "hook", "url_env": "HOOK"})
        with running(Alerter(cfg, {"HOOK": hook.url()}, record=broken_journal)) as alerter:
            alerter("not an event")  # type: ignore[arg-type]
            alerter(event("risk.halt", "halted"))
            hook.wait_for(1)
            wait_until(lambda: bool(rows))
            stats = alerter.stats()["hook"]
    assert stats["sent"] == 1
    assert rows[0]["outcome"] == "sent"


# -- bad configuration and secrets -------------------------------------------------------------------------


def test_a_missing_variable_is_an_error_naming_the_channel_and_the_variable() -> None:
    cfg = alerts_config({"name": "pager", "url_env": "HFLITE_ALERT_PAGER"})
    with pytest.raises(AlertConfigError) as info:
        Alerter(cfg, {})
    message = str(info.value)
    assert "'pager'" in message
    assert "HFLITE_ALERT_PAGER is not set" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        f"discord://{DISCORD_TOKEN}",  # a webhook token without its id
        f"nosuchservice://{HOOK_TOKEN}@example.test",
        f"not a url {SMTP_PASSWORD}",
    ],
)
def test_an_invalid_url_is_an_error_that_names_the_channel_never_the_url(url: str) -> None:
    cfg = alerts_config({"name": "chat", "url_env": "HFLITE_ALERT_CHAT"})
    with captured("DEBUG") as out, pytest.raises(AlertConfigError) as info:
        Alerter(cfg, {"HFLITE_ALERT_CHAT": url})
    message = str(info.value)
    assert "'chat'" in message
    assert "HFLITE_ALERT_CHAT" in message
    for secret in SECRETS:
        assert secret not in message
        assert secret not in out.getvalue()


def test_email_without_tls_to_a_remote_server_is_warned_about() -> None:
    env = {"MAIL": f"mailto://alerts:{SMTP_PASSWORD}@smtp.example.test?from=a@example.test&to=b@example.test"}
    cfg = alerts_config({"name": "mail", "url_env": "MAIL"})
    with captured("INFO") as out:
        Alerter(cfg, env).close()
    text = out.getvalue()
    assert "alert.email_without_tls" in text
    assert "smtp_host=smtp.example.test" in text
    assert SMTP_PASSWORD not in text


def test_disabled_alerts_send_nothing_and_need_no_urls() -> None:
    cfg = alerts_config({"name": "hook", "url_env": "UNSET"}, enabled=False)
    alerter = Alerter(cfg, {})
    alerter(event("risk.halt", "halted"))
    assert alerter.stats() == {}
    assert alerter.close() == 0


@pytest.mark.parametrize("json_logs", [False, True])
def test_no_secret_reaches_the_logs_errors_stats_or_records(
    json_logs: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apprise.plugins.email.base import NotifyEmail

    monkeypatch.setattr(NotifyEmail, "request_rate_per_sec", 0)  # no 5.5 s pacing before the login retry
    rows: list[dict[str, Any]] = []
    with WebhookServer(default_status=500) as failing, SmtpServer("alerts", SMTP_PASSWORD) as smtp:
        env = {
            "FAILING": failing.url("json", f"/hook/{HOOK_TOKEN}"),
            "DEAD": f"json://127.0.0.1:{closed_port()}/x/{HOOK_TOKEN}",
            "MAIL": smtp.url("ops@example.test"),
            "BADLOGIN": smtp.url("ops@example.test", password=SMTP_PASSWORD + "x"),
        }
        cfg = alerts_config(
            *({"name": n.lower(), "url_env": n} for n in env), retries=1, retry_base_s=0.05, timeout_s=1.0
        )
        with captured("DEBUG", json=json_logs) as out:
            alerter = Alerter(cfg, env, record=rows.append)
            alerter(event("risk.halt", "halted"))
            wait_until(lambda: len(rows) >= 4, timeout=8.0)
            stats = alerter.stats()
            alerter.close(timeout=1.0)
            for name in env:
                logs.get("hflite.test").info("env", name=name, value=env[name])
    text = out.getvalue()
    assert sorted((r["channel"], r["outcome"]) for r in rows) == [
        ("badlogin", "failed"),
        ("dead", "failed"),
        ("failing", "failed"),
        ("mail", "sent"),
    ]
    assert "alert.failed" in text
    for secret in SECRETS:
        assert secret not in text
        assert secret not in repr(stats)
        assert secret not in repr(rows)


# -- the pieces ---------------------------------------------------------------------------------------------


def test_timeouts_are_appended_unless_the_url_sets_them() -> None:
    assert with_timeouts("json://h/p", 2.5) == "json://h/p?cto=2.5&rto=2.5"
    assert with_timeouts("mailto://u:p@h?to=a@b.c", 10) == "mailto://u:p@h?to=a@b.c&cto=10&rto=10"
    assert with_timeouts("json://h/p?rto=30", 2) == "json://h/p?rto=30&cto=2"
    assert with_timeouts("json://h/p?cto=1&rto=30", 2) == "json://h/p?cto=1&rto=30"


def test_the_title_carries_the_run_and_level_and_the_body_the_facts() -> None:
    ev = OpsEvent(
        "daily.summary",
        "daily summary",
        "P&L +1.2%",
        run_id="",
        bar_ts=1_700_000_000_000_000_000,
        ts=1_700_000_100.0,
        fields={"pnl": 1234.5, "risk_use": {"gross": 0.4}, "anomalies": ["SPY gap"]},
    )
    title, body = format_alert(ev, run_id="paper-1")
    assert title == "[hflite paper-1] INFO daily summary"
    assert body.splitlines() == [
        "P&L +1.2%",
        "",
        "kind: daily.summary",
        "bar: 2023-11-14T22:13:20+00:00",
        "at: 2023-11-14T22:15:00+00:00",
        "pnl: 1234.5",
        'risk_use: {"gross":0.4}',
        'anomalies: ["SPY gap"]',
    ]


def test_send_test_reports_every_channel_including_a_misconfigured_one() -> None:
    with WebhookServer() as ok, WebhookServer(default_status=500) as bad:
        env = {"OK": ok.url(), "BAD": bad.url()}
        cfg = alerts_config(
            {"name": "ok", "url_env": "OK", "levels": ["critical"]},
            {"name": "bad", "url_env": "BAD"},
            {"name": "unset", "url_env": "UNSET"},
            retries=1,
        )
        rows = send_test(cfg, env, run_id="t1")
    assert [(name, good) for name, good, _ in rows] == [("ok", True), ("bad", False), ("unset", False)]
    assert rows[0][2] == ""
    assert "500" in rows[1][2]
    assert "UNSET is not set" in rows[2][2]
    assert len(bad.hits) == 2  # one retry
    assert ok.hits[0].json["title"] == "[hflite t1] INFO test alert"


# -- the CLI ------------------------------------------------------------------------------------------------


def write_config(tmp_path: Path, channels: str) -> Path:
    path = tmp_path / "alerts.toml"
    path.write_text(
        '[run]\nsymbols = ["SPY"]\nstart = "2020-01-02"\nend = "2020-12-31"\n\n'
        '[strategy]\nname = "trend"\n\n[alerts]\nretries = 1\nretry_base_s = 0.05\ntimeout_s = 2\n' + channels
    )
    return path


CHANNELS_TOML = """
[[alerts.channels]]
name = "hook"
url_env = "HFLITE_TEST_ALERT_HOOK"
levels = ["critical"]

[[alerts.channels]]
name = "email"
url_env = "HFLITE_TEST_ALERT_EMAIL"
levels = ["warning", "critical"]
kinds = ["risk.halt", "feed.stale"]
"""


def test_cli_alerts_test_sends_to_every_channel_and_prints_a_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with WebhookServer() as hook, SmtpServer("alerts", SMTP_PASSWORD) as smtp:
        monkeypatch.setenv("HFLITE_TEST_ALERT_HOOK", hook.url("json", f"/h/{HOOK_TOKEN}"))
        monkeypatch.setenv("HFLITE_TEST_ALERT_EMAIL", smtp.url("ops@example.test"))
        config = write_config(tmp_path, CHANNELS_TOML)
        result = CliRunner().invoke(alerts_app, ["test", "--config", str(config)], env={"COLUMNS": "200"})
        mails = smtp.wait_for(1)
    assert result.exit_code == 0, result.output
    assert "all 2 channels delivered the test alert" in result.output
    assert "hook" in result.output
    assert "email" in result.output
    assert len(hook.hits) == 1
    assert mails[0].subject == "[hflite alerts-test] INFO test alert"
    for secret in SECRETS:
        assert secret not in result.output


def test_cli_alerts_test_exits_1_when_a_channel_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with WebhookServer(default_status=500) as hook:
        monkeypatch.setenv("HFLITE_TEST_ALERT_HOOK", hook.url("json", f"/h/{HOOK_TOKEN}"))
        monkeypatch.delenv("HFLITE_TEST_ALERT_EMAIL", raising=False)
        config = write_config(tmp_path, CHANNELS_TOML)
        result = CliRunner().invoke(alerts_app, ["test", "--config", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "2 of 2 channels failed: hook, email" in result.output
    assert "HFLITE_TEST_ALERT_EMAIL is not set" in result.output
    assert HOOK_TOKEN not in result.output


def test_cli_alerts_test_with_no_channels_says_how_to_add_one(tmp_path: Path) -> None:
    config = write_config(tmp_path, "")
    result = CliRunner().invoke(alerts_app, ["test", "--config", str(config)])
    assert result.exit_code == 1
    assert "No alert channels configured" in result.output
    assert "[[alerts.channels]]" in result.output
    assert "HFLITE_ALERT_DISCORD=discord://webhook_id/webhook_token" in result.output


def test_cli_alerts_channels_lists_channels_and_whether_each_variable_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HFLITE_TEST_ALERT_HOOK", f"json://127.0.0.1:9/h/{HOOK_TOKEN}")
    monkeypatch.delenv("HFLITE_TEST_ALERT_EMAIL", raising=False)
    config = write_config(tmp_path, CHANNELS_TOML)
    result = CliRunner().invoke(alerts_app, ["channels", "--config", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    assert "critical" in lines["hook"]
    assert "all" in lines["hook"]
    assert "yes" in lines["hook"]
    assert "JSON" in lines["hook"]
    assert "risk.halt, feed.stale" in lines["email"]
    assert "HFLITE_TEST_ALERT_EMAIL" in lines["email"]
    assert " no " in lines["email"]
    assert HOOK_TOKEN not in result.output
    assert "127.0.0.1:9" not in result.output


def test_cli_alerts_channels_reads_dotenv_and_flags_an_invalid_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HFLITE_TEST_ALERT_HOOK", raising=False)
    monkeypatch.delenv("HFLITE_TEST_ALERT_EMAIL", raising=False)
    (tmp_path / ".env").write_text(
        f"HFLITE_TEST_ALERT_HOOK=discord://{DISCORD_TOKEN}\n"
        f"HFLITE_TEST_ALERT_EMAIL=mailto://a:{SMTP_PASSWORD}@127.0.0.1:25?mode=insecure&from=a@y.test&to=x@y.test\n"
    )
    config = write_config(tmp_path, CHANNELS_TOML)
    result = CliRunner().invoke(alerts_app, ["channels", "--config", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    assert "invalid URL" in lines["hook"]
    assert "E-Mail" in lines["email"]
    for secret in SECRETS:
        assert secret not in result.output


def test_cli_alerts_with_a_bad_config_fails_with_one_error_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(write_config(tmp_path, "").read_text().replace("retries = 1", "per_minute = 0"))
    result = CliRunner().invoke(alerts_app, ["channels", "--config", str(config)])
    assert result.exit_code == 2
    assert "per_minute" in result.output
