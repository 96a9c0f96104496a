"""What a runtime tells the bus after each bar-time (``Watch``), and the kit a run or ``serve``
starts around it (``OpsKit``: metrics, alert channels, the Telegram bot, the control API).

``Watch.after`` compares the engine with what it saw at the previous bar-time and emits the new
fills, stop-outs, verdicts, risk events (limits, halts, commands, breakers) and, once a day, the
summary; it reads lists the engine keeps anyway and does nothing when nobody listens. The runtime
calls it from ``Session.after``; alerts raised are journaled there too (``alert`` events), so the
report and ``/alerts`` show them.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from hflite import logs
from hflite.ops.events import OpsBus, OpsEvent

if TYPE_CHECKING:
    from hflite.config import Settings
    from hflite.engine.core import Engine

#: risk event kind -> ops event kind
RISK_KINDS = {
    "halt": "risk.halt",
    "pause": "risk.command",
    "resume": "risk.command",
    "kill": "risk.command",
    "close_all": "risk.command",
    "breaker": "risk.breaker",
    "market_breaker": "risk.breaker",
}


class Watch:
    """Turns what changed in an engine since the last bar-time into ops events (module docstring)."""

    def __init__(
        self,
        bus: OpsBus,
        settings: Settings,
        journal: Any = None,
        *,
        books: list[Callable[[Mapping[str, Any], Any], None]] | None = None,
        clock: Any = time.time,
    ) -> None:
        self.bus = bus
        self.books = books or []  # each gets (book, risk check) after every bar-time (the metrics)
        self.settings = settings
        self.journal = journal  # alerts are journaled (kind "alert") when set
        self.clock = clock
        self.fills = 0
        self.verdicts = 0
        self.risk_events = 0
        self.summary_day: str | None = None
        self.stale: set[str] = set()
        self.reconnect_seen = False
        self.first_ts: int | None = None  # the first bar-time this process decided (live model use)
        alerts = settings.alerts
        self.summary_at = alerts.daily_summary
        self.tz = ZoneInfo(alerts.summary_tz)
        self.alert_fills = alerts.fills
        self._thread = threading.get_ident()  # the trading thread: the journal's connection is its own
        self._from_threads: deque[OpsEvent] = deque()  # alerts raised elsewhere (an LLM worker), to journal
        if journal is not None:
            bus.subscribe(self._journal_alert)

    def _journal_alert(self, ev: OpsEvent) -> None:
        if self.journal is None or not ev.alertable or (ev.kind == "fill" and not self.alert_fills):
            return
        if threading.get_ident() != self._thread:  # journaled by the trading thread at its next bar
            self._from_threads.append(ev)
            return
        while self._from_threads:
            self._write_alert(self._from_threads.popleft())
        self._write_alert(ev)

    def _write_alert(self, ev: OpsEvent) -> None:
        self.journal.record("alert", ev.kind, ev.as_dict())

    def skip_to(self, engine: Engine) -> None:
        """Start from the engine as it is (after a recovery re-ran old bar-times: no re-alerts)."""
        self.fills = len(engine.fills)
        self.verdicts = len(engine.decisions)
        self.risk_events = len(engine.risk.events)

    def after(self, engine: Engine, ts: int, book: Mapping[str, Any], step_ns: int | None) -> None:
        if self.first_ts is None:
            self.first_ts = ts
        while self._from_threads and self.journal is not None:
            self._write_alert(self._from_threads.popleft())
        for fn in self.books:
            fn(book, book.get("risk_check"))
        bus = self.bus
        if not bus:
            return
        self._fills(engine, ts)
        for d in engine.decisions[self.verdicts :]:
            v = d.verdict
            rule = v.rules[0] if v.rules else ""
            bus.emit(
                "risk.verdict", fields={"symbol": v.symbol, "status": str(v.status), "rule": rule}, bar_ts=ts
            )
            for r in v.rules:  # a circuit breaker holding an entry
                if r in ("circuit_breaker", "market_breaker"):
                    sym = v.symbol if r == "circuit_breaker" else ""
                    bus.emit("risk.breaker", f"{r.replace('_', ' ')} {sym}".strip(), v.reason,
                             key=f"breaker|{r}|{sym}|{ts}", bar_ts=ts,
                             fields={"symbol": sym, "detail": v.reason})  # fmt: skip
        self.verdicts = len(engine.decisions)
        for ev in engine.risk.events[self.risk_events :]:
            self._risk_event(ev, ts)
        self.risk_events = len(engine.risk.events)
        sent = [o.sent_ns for o in engine.orders.values() if o.created_ts == ts and o.sent_ns]
        latency = (max(sent) - step_ns) / 1e9 if sent and step_ns else None
        bus.emit(
            "bar", fields={"bar_to_order_s": latency if latency is None or latency >= 0 else 0.0}, bar_ts=ts
        )
        self._daily_summary(book, ts)

    def _fills(self, engine: Engine, ts: int) -> None:
        for f in engine.fills[self.fills :]:
            side = str(getattr(f.side, "value", f.side))
            bps = f.slippage / f.price * 1e4 if f.price else 0.0
            stop = f.order_id.endswith("-sl")
            self.bus.emit(
                "stop_out" if stop else "fill",
                f"{'stopped out of' if stop else side} {f.qty:g} {f.symbol} at {f.price:,.4f}",
                f"order {f.order_id}, fee {f.fee:,.2f}, slippage {bps:.1f} bps",
                key=f"fill|{f.order_id}|{f.ts}|{f.qty}",
                bar_ts=ts,
                fields={"symbol": f.symbol, "side": side, "qty": f.qty, "price": f.price, "fee": f.fee,
                        "slippage_bps": bps, "order_id": f.order_id, "reason": ""},
            )  # fmt: skip
            if stop:  # a stop-out is also a fill (metrics count both)
                self.bus.emit(
                    "fill", key=f"fill|{f.order_id}|{f.ts}|{f.qty}", bar_ts=ts,
                    fields={"symbol": f.symbol, "side": side, "qty": f.qty, "price": f.price, "fee": f.fee,
                            "slippage_bps": bps, "order_id": f.order_id, "reason": "stop-loss"},
                )  # fmt: skip
        self.fills = len(engine.fills)

    def _risk_event(self, ev: Any, ts: int) -> None:
        kind = RISK_KINDS.get(ev.kind) or ("risk.limit" if ev.kind.endswith("_loss") or ev.kind in
                                           ("protection", "drawdown_reduce") else None)  # fmt: skip
        if kind is None:
            return
        fields: dict[str, Any] = {"detail": ev.detail}
        if kind == "risk.command":
            fields |= {"action": ev.kind, "reason": ev.detail, "source": _source(ev.detail)}
        elif kind == "risk.halt":
            fields |= {"reason": ev.detail}
        elif kind == "risk.breaker":
            fields |= {"symbol": ev.symbol if ev.kind == "breaker" else ""}
        else:
            fields |= {"rule": ev.kind}
        what = ev.kind.replace("_", " ")
        title = f"{what}{' ' + ev.symbol if ev.symbol else ''}"
        self.bus.emit(kind, title, ev.detail, key=f"{ev.kind}|{ev.symbol}|{ev.ts}", bar_ts=ts, fields=fields)

    def started(self, feed: str, symbols: list[str], journal: str) -> None:
        venue = self.settings.venue.kind
        self.bus.emit(
            "run.start", f"run {self.bus.run_id} started",
            f"venue {venue}, feed {feed}, symbols {', '.join(symbols)}", key=f"start|{time.time_ns()}",
            fields={"venue": venue, "feed": feed, "symbols": symbols, "journal": journal},
        )  # fmt: skip

    def stopped(self, why: str, steps: int, fills: int) -> None:
        self.bus.emit(
            "run.stop", f"run {self.bus.run_id} stopped: {why}", f"{steps} bar-time(s), {fills} fill(s)",
            key=f"stop|{time.time_ns()}", fields={"steps": steps, "fills": fills, "why": why},
        )  # fmt: skip

    def differences(self, diffs: list[Any]) -> None:
        """A reconciliation's differences: an unexplained one is critical (trading halts on it)."""
        for d in diffs:
            self.bus.emit(
                "reconcile.diff", f"reconcile {d.key}: {'explained' if d.explained else 'UNEXPLAINED'}",
                f"journal {d.journal}; venue {d.venue}; resolution: {d.resolution}",
                level="info" if d.explained else "critical", key=f"reconcile|{d.key}",
                fields={"key": d.key, "explained": bool(d.explained), "resolution": d.resolution},
            )  # fmt: skip

    def venue_request(self, venue: str) -> Callable[[str, float, str], None]:
        """The venue's observer: each send's latency and error, for the metrics."""

        def observe(op: str, seconds: float, error: str) -> None:
            self.bus.emit(
                "venue.request", fields={"venue": venue, "op": op, "latency_s": seconds, "error": error}
            )

        return observe

    def venue_state(self, remote: Any) -> None:
        """A venue whose stream dropped and came back (its ``reconnected`` flag, cleared by the
        reconciliation that follows): a warning once per drop, then the reconnect."""
        back = bool(getattr(remote, "reconnected", False))
        if back and not self.reconnect_seen:
            name = remote.name
            now = time.time_ns()
            self.bus.emit(
                "venue.disconnect", f"venue {name}: stream dropped", "reconnected; reconciling first",
                key=f"disconnect|{name}|{now}", fields={"venue": name, "why": "stream dropped"},
            )  # fmt: skip
            self.bus.emit(
                "venue.reconnect",
                f"venue {name}: reconnected",
                key=f"reconnect|{name}|{now}",
                fields={"venue": name},
            )
        self.reconnect_seen = back

    def feed(self, status: Mapping[str, str]) -> None:
        """The live feed's word on each symbol: a symbol turning delayed is stale (once per spell)."""
        if not self.bus:
            return
        for sym, line in status.items():
            late = "delayed" in line
            if late and sym not in self.stale:
                self.bus.emit("feed.stale", f"{sym} data is late", line, key=f"stale|{sym}",
                              fields={"symbol": sym, "detail": line})  # fmt: skip
            if late:
                self.stale.add(sym)
            else:
                self.stale.discard(sym)

    def _daily_summary(self, book: Mapping[str, Any], ts: int) -> None:
        if self.summary_at is None:
            return
        now = datetime.fromtimestamp(self.clock(), self.tz)
        day = now.date().isoformat()
        if now.strftime("%H:%M") < self.summary_at or self.summary_day == day:
            return
        self.summary_day = day
        self.bus.send(daily_summary(book, self.bus.run_id, day))


def daily_summary(book: Mapping[str, Any], run_id: str, day: str) -> OpsEvent:
    """The day's summary: P&L, positions, risk use and anomalies, from the runtime's book."""
    risk = book.get("risk_check") or {}
    pnl = (risk.get("pnl") or {}).get("day")
    eq = float(book.get("equity") or 0.0)
    positions = book.get("positions") or {}
    use = {r["name"]: round(float(r["utilisation"]), 3) for r in risk.get("limits", [])}
    anomalies = [
        *(f"halted: {book['halted']}" for _ in [0] if book.get("halted")),
        *(f"limit {n} at {u:.0%}" for n, u in use.items() if u >= 0.8),
        *(f"{s}: {line}" for s, line in (book.get("feed") or {}).items() if "delayed" in str(line)),
        *(
            f"risk {book.get('risk')}: {book.get('risk_reason', '')}"
            for _ in [0]
            if book.get("risk") != "running"
        ),
    ]
    pnl_text = "n/a" if pnl is None else f"{pnl:+,.2f}"
    lines = [
        f"equity {eq:,.2f}, day P&L {pnl_text}",
        f"positions {len(positions)}: "
        + (", ".join(f"{s} {p['qty']:g}" for s, p in sorted(positions.items())) or "flat"),
        "risk use: " + (", ".join(f"{n} {u:.0%}" for n, u in use.items()) or "-"),
        "anomalies: " + ("; ".join(anomalies) or "none"),
    ]
    return OpsEvent(
        "daily.summary", f"daily summary {day}", "\n".join(lines), key=f"summary|{day}", run_id=run_id,
        fields={"pnl": pnl, "pnl_pct": (pnl / (eq - pnl) * 100) if pnl is not None and eq - pnl else None,
                "equity": eq, "positions": len(positions), "risk_use": use, "anomalies": anomalies},
    )  # fmt: skip


def _source(detail: str) -> str:
    """The source a command's risk event names ("... [via api]"), else cli."""
    for src in ("api", "telegram"):
        if f"[via {src}]" in detail:
            return src
    return "cli"


def load_env(names: list[str]) -> dict[str, str]:
    """The values of ``names`` from the environment, else ``.env`` (the same precedence as settings)."""
    from dotenv import dotenv_values

    file = (
        {k: v for k, v in dotenv_values(Path(".env")).items() if v is not None}
        if Path(".env").is_file()
        else {}
    )
    return {n: os.environ.get(n) or file.get(n, "") for n in names if os.environ.get(n) or file.get(n)}


class NoOps:
    """No kit (a run without API, alerts, bot or metrics): a watch on an empty bus, which emits
    nothing; the runtime calls it the same way."""

    def watch(self, settings: Settings, journal: Any, prep: Any, feed: str = "live") -> Watch:
        return Watch(OpsBus(settings.run.name), settings)

    def beat(self, status: str) -> None:
        return None

    def failed(self, exc: BaseException) -> None:
        return None


class OpsKit:
    """The pieces around one run (or ``serve``): metrics, alerts, Telegram, the API. Built from the
    config; ``start`` returns lines to print; ``stop`` flushes alerts and stops the threads."""

    def __init__(
        self,
        settings: Settings,
        journal: Path,
        *,
        api: bool = False,
        host: str | None = None,
        port: int | None = None,
        insecure_remote: bool = False,
        run_id: str = "",
        in_process: bool = True,
        alerts: bool = True,
        telegram: bool = True,
    ) -> None:
        from hflite.ops.state import RunView

        self.settings = settings
        self.journal = journal
        self.run_id = run_id or settings.run.name
        self.bus = OpsBus(self.run_id)
        self.view = RunView(journal, reports=settings.report.dir)
        self.in_process = in_process
        self.log = logs.get("hflite.ops")
        self.lines: list[str] = []
        self._prep: Any = None
        self.recorded = False  # the session replays recorded bars: its clock is the bar-time
        self._watch: Watch | None = None
        self._ready_sent = False
        self._last_status = ""
        env_names = [c.url_env for c in settings.alerts.channels] + [
            settings.api.token_env,
            settings.telegram.token_env,
        ]
        self.env = load_env(env_names)
        self.metrics = None
        self.latest_book: Mapping[str, Any] | None = None  # the runtime's book after its last bar-time
        if settings.metrics.enabled:
            from hflite.engine.market import FREQ_NS
            from hflite.ops.metrics import Metrics

            bar_s = FREQ_NS[settings.run.frequency] / 1e9
            self.metrics = Metrics(self.run_id, stale_after_s=bar_s * settings.alerts.stale_after_bars)
            self.bus.subscribe(self.metrics)
        self.alerter = None
        if alerts and settings.alerts.enabled and settings.alerts.channels:
            from hflite.ops.alerts import Alerter

            self.alerter = Alerter(settings.alerts, self.env, run_id=self.run_id)
            self.bus.subscribe(self.alerter)
        self.bot = None
        if telegram and settings.telegram.enabled:
            from hflite.ops.telegram import TelegramBot

            token = self.env.get(settings.telegram.token_env, "")
            if not token:
                from hflite.ops.api import ApiError

                raise ApiError(
                    f"[telegram] enabled needs the bot token: set {settings.telegram.token_env} in .env"
                )
            self.bot = TelegramBot(settings.telegram, token, self.view, run_id=self.run_id)
            self.bus.subscribe(self.bot)
        self.server = None
        if api:
            from hflite.ops.api import ApiServer, check_bind, create_app, is_loopback, read_token

            cfg = settings.api
            host = host or cfg.host
            port = cfg.port if port is None else port
            tls = cfg.tls_cert is not None and cfg.tls_key is not None
            warning = check_bind(host, tls, insecure_remote)
            if warning:
                self.lines.append(warning)
            token = read_token(cfg.token_env, self.env)
            app = create_app(
                self.view, token, config=cfg, metrics=self.metrics, on_command=self._command_heard,
                book_source=(lambda: self.latest_book) if in_process else None,
                docs_open=is_loopback(host),
                now_source=self._session_now,
            )  # fmt: skip
            self.server = ApiServer(
                app, host, port, cert=cfg.tls_cert if tls else None, key=cfg.tls_key if tls else None
            )

    def _session_now(self) -> float | None:
        """A recorded feed's clock: the last bar-time (epoch seconds); None on the live clock."""
        book = self.latest_book
        if not self.recorded or not book or not book.get("bar_ts"):
            return None
        return datetime.fromisoformat(str(book["bar_ts"])).timestamp()

    def watch(self, settings: Settings, journal: Any, prep: Any, feed: str = "live") -> Watch:
        """The runtime's watch on this kit's bus (metrics get the book after each bar-time), and the
        prepared run's LLM service reporting its calls and fallbacks."""
        llm = getattr(prep, "llm", None)
        if llm is not None:
            llm.observer = self._llm
        self.recorded = feed == "recorded"
        self._prep = prep
        self._watch = Watch(self.bus, settings, journal, books=[self._keep_book])
        return self._watch

    def models_used(self) -> dict[str, int]:
        """Decisions per registry model id over the bar-times this process decided (AI runs)."""
        brain = getattr(self._prep, "brain", None)
        since = self._watch.first_ts if self._watch is not None else None
        if brain is None or since is None:
            return {}
        used: dict[str, int] = {}
        for frame in brain.decisions.values():
            if "model_id" not in frame:
                continue
            idx = frame.index  # bar-times, at whatever resolution pandas chose: compared in ns
            ts = idx.as_unit("ns").asi8 if hasattr(idx, "as_unit") else frame["ts"].to_numpy("int64")
            for mid in frame["model_id"].to_numpy(dtype=object)[ts >= since]:
                if mid:
                    used[str(mid)] = used.get(str(mid), 0) + 1
        return used

    def log_model_use(self) -> None:
        """MLflow: which model versions this run traded with (``hflite mlflow-ui`` shows them)."""
        used = self.models_used()
        if not used:
            return
        from hflite.ai.brain import registry_for

        registry = registry_for(self.settings.ai)
        params = {
            "venue": self.settings.venue.kind,
            "journal": str(self.journal),
            "symbols": ",".join(self.settings.run.symbols),
        }
        answer = registry.log_live_use(self.run_id, used, params)
        self.log.info("ops.models_used", models=len(used), decisions=sum(used.values()), **answer)

    def _keep_book(self, book: Mapping[str, Any], _risk: Any) -> None:
        """The latest book, for the metrics at scrape time (setting ~60 gauges every bar would cost
        the loop more than everything else the kit does)."""
        self.latest_book = book

    def failed(self, exc: BaseException) -> None:
        """The run ends on an exception (Ctrl-C included): a critical ``run.stop``."""
        why = "stopped by Ctrl-C" if isinstance(exc, KeyboardInterrupt) else f"error: {exc}"
        self.bus.emit(
            "run.stop", f"run {self.run_id} stopped: {why}"[:200], str(exc), level="critical",
            key=f"stop|{time.time_ns()}", fields={"why": why},
        )  # fmt: skip

    def _llm(self, kind: str, fields: dict[str, Any]) -> None:
        if kind == "llm.fallback":
            self.bus.emit(kind, f"LLM fallback ({fields.get('backend', '?')})", str(fields.get("why", "")),
                          key=f"llm|{fields.get('why', '')}", fields=fields)  # fmt: skip
        else:
            self.bus.emit(kind, fields=fields)

    def beat(self, status: str) -> None:
        """Each heartbeat: the systemd watchdog (when run as a ``Type=notify`` service)."""
        from hflite.ops import systemd

        if not self._ready_sent:
            self._ready_sent = True
            systemd.ready()
        systemd.watchdog()
        if status != self._last_status:
            self._last_status = status
            systemd.status(status)

    def _command_heard(self, answer: dict[str, Any]) -> None:
        self.log.info(
            "ops.command_queued", action=answer["action"], source=answer.get("source"), seq=answer["seq"]
        )

    def start(self) -> list[str]:
        lines = list(self.lines)
        if self.alerter is not None:  # its senders started with it
            lines.append(f"alerts: {', '.join(c.name for c in self.settings.alerts.channels)}")
        if self.bot is not None:
            from hflite.ops.api import ApiError
            from hflite.ops.telegram import TelegramAuthError

            try:
                self.bot.start(timeout_s=5.0)  # an unreachable Bot API is retried in the background
            except TelegramAuthError as exc:
                raise ApiError(str(exc)) from None
            lines.append(
                f"telegram: answering chat(s) {', '.join(map(str, self.settings.telegram.chat_ids))}"
            )
        if self.server is not None:
            url = self.server.start()
            lines.append(f"control API: {url} (docs {url}/docs; token from {self.settings.api.token_env})")
        return lines

    def stop(self) -> None:
        try:
            self.log_model_use()
        except Exception as exc:  # bookkeeping: never hides why the run ended
            self.log.warning("ops.models_used_failed", error=str(exc))
        if self.server is not None:
            self.server.stop()
        if self.bot is not None:
            try:
                self.bot.stop()
            except Exception as exc:  # stopping must not hide why the run ended
                self.log.warning("telegram.stop_failed", error=str(exc))
        if self.alerter is not None:
            self.alerter.close()
