"""``hflite llm``: which LLM backends answer, what a run may spend, and the journal of every call."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from hflite.cli_ai import WideOpt, _console, _fail
from hflite.redact import sanitize_url
from hflite.tables import Col, print_table


def _seconds(value: float) -> float:
    """A time limit: a positive, finite number of seconds (NaN would wait forever)."""
    if not math.isfinite(value) or value <= 0:
        raise typer.BadParameter(f"expected a positive number of seconds, got {value}")
    return value


llm_app = typer.Typer(
    help="LLM backends (in-process GGUF, Ollama, OpenAI-compatible), budgets and the call journal.\n\n"
    "Example: hflite llm check --config configs/ai.toml",
    no_args_is_help=True,
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file (\\[llm] section).")]


def _cfg(config: Path | None, overrides: dict[str, Any] | None = None) -> Any:
    from hflite.config import ConfigError, load_llm_settings

    try:
        return load_llm_settings(config, overrides)
    except ConfigError as exc:
        _fail(str(exc))


def _sample_decision() -> Any:
    from hflite.ai.llm.roles import facts_from_rows

    verdict = {
        "intent_id": "llm-check-SPY",
        "ts": "2024-06-03 20:00:00+00:00",
        "symbol": "SPY",
        "kind": "entry",
        "side": "buy",
        "price": 527.8,
        "intent_reason": "AI ensemble +0.41 >= enter (confidence 0.52)",
        "status": "approved",
        "qty_requested": 40.0,
        "qty_approved": 40.0,
        "reason": "risk 0.75% of equity over a 3 ATR stop",
    }
    ai = {
        "score": 0.41,
        "confidence": 0.52,
        "banker": -0.12,
        "banker_conf": 0.4,
        "banker_reasons": '[["policy rate change", 0.0, -0.05], ["real rate", 2.1, -0.08]]',
        "investor": 0.25,
        "investor_conf": 0.3,
        "investor_reasons": '[["breadth", 0.62, 0.1], ["fear (VIX)", -0.6, 0.09]]',
        "market": 0.7,
        "market_conf": 0.8,
        "market_reasons": '[["trend 50/200", 0.05, 0.2], ["ML P(up)", 0.58, 0.25]]',
        "prob_up": 0.58,
        "exp_return": 0.004,
        "regime": "bull",
    }
    return facts_from_rows(verdict, ai)


def probe(cfg: Any, name: str, *, call: bool, timeout_s: float) -> dict[str, Any]:
    """Ask one backend what it offers and (with ``call``) to explain a fixed sample decision the way a run
    would (the same role, prompt, schema and validation)."""
    from hflite.ai.llm.backends import make_backend
    from hflite.ai.llm.base import LLMError, LLMRequest
    from hflite.ai.llm.roles import explain_job
    from hflite.ai.llm.schema import ReplyError
    from hflite.ai.llm.service import model_id

    row: dict[str, Any] = {"backend": name, "model": model_id(cfg, name), "status": "down", "detail": ""}
    try:
        llm = make_backend(name, cfg)
    except LLMError as exc:
        row["detail"] = str(exc)
        return row
    try:
        t0 = time.perf_counter()
        offered = llm.models(timeout_s=timeout_s)
        row["list_ms"] = (time.perf_counter() - t0) * 1000
        row["offered"] = [m.id for m in offered]
        row["status"] = "up"
        if row["model"] not in row["offered"] and not any(row["model"] in m for m in row["offered"]):
            row["status"] = "no model"
            row["detail"] = f"{row['model']} is not among the {len(offered)} models it offers"
        if call and row["status"] == "up":
            job = explain_job(_sample_decision(), cfg.grounded)  # what a run asks, for a fixed decision
            request = LLMRequest(
                job.messages,
                job.json_schema(),
                max_tokens=cfg.max_reply_tokens,
                temperature=cfg.temperature,
                seed=cfg.seed,
                timeout_s=max(timeout_s, cfg.timeout_s),
            )
            reply = llm.chat(request)
            row["latency_ms"] = reply.latency_s * 1000
            row["tokens"] = reply.tokens
            row["tokens_per_s"] = reply.tokens_per_s
            try:
                job.parse(reply.text)
                row["valid"] = True
            except ReplyError as exc:
                row["valid"] = False
                row["detail"] = f"the test explanation is invalid: {exc}"
    except LLMError as exc:
        row["status"] = "down" if row["status"] != "up" else "error"
        row["detail"] = str(exc)
    finally:
        llm.close()
    return row


#: The backends table of ``hflite llm check`` (the rest with --wide).
BACKEND_COLUMNS = (
    Col("backend", "id"),
    Col("chain", "id", default=False),
    Col("where", "id", default=False),
    Col("model", "id"),
    Col("status", "id"),
    Col("offers", "text", default=False),
    Col("ms", "count"),
    Col("reply", "id"),
    Col("tokens/s", "number", default=False, digits=1),
    Col("detail", "text"),
)
_STATUS_COLOUR = {"up": "green", "no model": "yellow", "error": "yellow", "down": "red"}


def _backend_row(cfg: Any, probed: dict[str, Any]) -> dict[str, Any]:
    """One row of the backends table from what :func:`probe` found."""
    name = probed["backend"]
    offered = probed.get("offered", [])
    valid = probed.get("valid")
    return {
        "backend": name,
        "chain": "configured" if name == cfg.backend else ("fallback" if name in cfg.fallbacks else None),
        "where": "in-process" if name == "gguf" else sanitize_url(getattr(cfg, name).url),
        "model": probed["model"],
        "status": Text(probed["status"], style=_STATUS_COLOUR[probed["status"]]),
        "offers": ", ".join(offered[:5]) + (" ..." if len(offered) > 5 else ""),
        "ms": probed.get("latency_ms"),
        "reply": None if valid is None else ("valid" if valid else Text("invalid", style="red")),
        "tokens/s": probed.get("tokens_per_s"),
        "detail": probed["detail"][:300],
    }


@llm_app.command("check")
def check(
    config: ConfigOpt = None,
    backend: Annotated[
        str | None, typer.Option(help="Check only this backend: gguf, ollama or openai.")
    ] = None,
    call: Annotated[
        bool, typer.Option("--call/--no-call", help="Also ask each reachable backend one question.")
    ] = True,
    timeout: Annotated[
        float,
        typer.Option(help="Seconds to wait for a backend's model list.", callback=_seconds),
    ] = 5.0,
    wide: WideOpt = False,
) -> None:
    """Which LLM backends answer (in-process GGUF, Ollama, OpenAI-compatible), with their model ids,
    latency and tokens per second; and the run settings: mode, roles, budgets, the journal, the
    replay tapes and the model's training cutoff.

    Exit code 1 when the mode is live and no backend of the chain answers.
    Example: hflite llm check --config configs/ai.toml
    """
    from hflite.ai.llm.backends import BACKENDS
    from hflite.ai.llm.journal import LLMJournal, read_tape
    from hflite.ai.llm.service import model_id

    cfg = _cfg(config)
    names = [backend] if backend else list(dict.fromkeys([cfg.backend, *cfg.fallbacks, *BACKENDS]))
    for n in names:
        if n not in BACKENDS:
            _fail(f"--backend: expected one of {', '.join(BACKENDS)}, got {n!r}")
    out = _console()
    rows = [probe(cfg, n, call=call, timeout_s=timeout) for n in names]
    print_table(out, BACKEND_COLUMNS, [_backend_row(cfg, r) for r in rows], wide=wide, title="LLM backends")
    settings = Table(title=escape("Run settings ([llm])"), show_header=False)
    settings.add_column("setting", style="bold")
    settings.add_column("value", overflow="fold")
    cut = cfg.cutoff(model_id(cfg))
    roles = ", ".join(r for r in ("explain", "advise", "summarise") if getattr(cfg, r)) or "none"
    journal_path = Path(cfg.journal)
    n_journal = 0
    if journal_path.is_file():
        j = LLMJournal(journal_path)
        n_journal = len(j.records(valid_only=True))
        j.close()
    tapes = []
    for t in cfg.tapes:
        try:
            tapes.append(f"{t} ({sum(1 for _ in read_tape(Path(t)))} replies)")
        except (OSError, ValueError) as exc:
            tapes.append(f"{t} (unreadable: {exc})")
    for name, value in (
        ("mode", f"{cfg.mode} (backtests: --llm off|replay|live)"),
        ("chain", " -> ".join((cfg.backend, *cfg.fallbacks))),
        ("roles", f"{roles} (explain scope: {cfg.explain_scope})"),
        ("advise bounds", f"min scale {cfg.advise_bounds.min_scale}, veto {cfg.advise_bounds.allow_veto}"),
        ("timeout", f"{cfg.timeout_s:g} s per call, {cfg.retries} retr{'y' if cfg.retries == 1 else 'ies'}"),
        (
            "budget",
            f"{cfg.max_calls} calls, {cfg.max_tokens:,} tokens per run; "
            f"replies <= {cfg.max_reply_tokens} tokens",
        ),
        ("concurrency", f"{cfg.concurrency} call(s) in flight (in-process models run one at a time)"),
        (
            "training cutoff",
            f"{cut} for {model_id(cfg)}" if cut else f"unknown for {model_id(cfg)} (set [llm] cutoffs)",
        ),
        (
            "journal",
            f"{cfg.journal} ({n_journal} valid records)"
            if journal_path.is_file()
            else f"{cfg.journal} (none yet: a --llm live run writes it)",
        ),
        ("tapes", "; ".join(tapes) or "none"),
    ):
        settings.add_row(name, escape(value))
    out.print(settings)
    usable = [r for r in rows if r["backend"] in (cfg.backend, *cfg.fallbacks) and r["status"] == "up"]
    if cfg.mode == "live" and not usable:
        Console(stderr=True).print(
            "[red]no backend of the chain answers[/]: live runs will use the rule-based fallbacks"
        )
        raise typer.Exit(1)


#: The table of ``hflite llm calls``: the reply, or the error of a failed call (the rest with --wide).
CALL_COLUMNS = (
    Col("id", "count"),
    Col("role", "id"),
    Col("subject", "id"),
    Col("backend/model", "id", default=False),
    Col("as of", "time"),
    Col("ok", "id"),
    Col("ms", "count", default=False),
    Col("tokens", "count", default=False),
    Col("reply", "text"),
)


@llm_app.command("calls")
def calls(
    config: ConfigOpt = None,
    role: Annotated[str | None, typer.Option(help="explain, advise or summarise.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Only this run's calls.")] = None,
    limit: Annotated[int, typer.Option(help="Newest N calls.")] = 20,
    wide: WideOpt = False,
) -> None:
    """The newest calls in the LLM journal: time, role, subject, backend, model, as-of, validity,
    latency, tokens and the reply (or the error).

    Example: hflite llm calls --role explain --limit 10
    """
    from hflite.ai.llm.journal import LLMJournal

    cfg = _cfg(config)
    if not Path(cfg.journal).is_file():
        _fail(f"no LLM journal at {cfg.journal}: run a backtest with --llm live first", code=1)
    journal = LLMJournal(cfg.journal)
    records = journal.records(role=role, run_id=run_id, limit=limit, newest_first=True)
    journal.close()
    rows = [
        {
            "id": r.id,
            "role": r.role,
            "subject": r.subject,
            "backend/model": f"{r.backend}/{r.model}",
            "as of": r.as_of,
            "ok": Text("yes", style="green") if r.valid else Text("no", style="red"),
            "ms": r.latency_ms,
            "tokens": r.tokens,
            "reply": " ".join((r.reply or r.error).split())[:200],  # a reply's JSON on one line
        }
        for r in records
    ]
    title = f"LLM calls ({cfg.journal}, newest first)"
    print_table(_console(), CALL_COLUMNS, rows, wide=wide, title=title)


@llm_app.command("export")
def export(
    out: Annotated[Path, typer.Option(help="The tape to write (JSON lines), e.g. tapes/my-run.jsonl.")],
    config: ConfigOpt = None,
    run_id: Annotated[str | None, typer.Option(help="Only this run's calls.")] = None,
) -> None:
    """Write the journal's valid replies as a replay tape (one JSON line per reply, the latest per
    role, model and prompt hash). List it in \\[llm] tapes to replay it anywhere.

    Example: hflite llm export --run-id ai-ai_ensemble-20261124-101500 --out tapes/ai.jsonl
    """
    from hflite.ai.llm.journal import LLMJournal, write_tape

    cfg = _cfg(config)
    if not Path(cfg.journal).is_file():
        _fail(f"no LLM journal at {cfg.journal}: run a backtest with --llm live first", code=1)
    journal = LLMJournal(cfg.journal)
    n = write_tape(journal.records(run_id=run_id, valid_only=True), out)
    journal.close()
    _console().print(f"{n} replies written to [bold]{out}[/]", highlight=False)
