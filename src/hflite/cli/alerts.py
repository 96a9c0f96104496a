"""``hflite alerts``: check the alert channels configured under ``[alerts]`` (docs/alerts.md).

A channel's apprise URL lives in the environment or ``.env`` under the name its ``url_env`` gives; these
commands say whether that variable is set and whether apprise accepts it, and send a test alert, but
never print the URL: it holds tokens.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hflite.cli_errors import fail
from hflite.config import ConfigError, Settings, load_settings

alerts_app = typer.Typer(
    help="The alert channels of \\[alerts] (Telegram, Discord, email, SMS...: apprise URLs in .env): "
    "list them and send a test alert.\n\n"
    "Example: hflite alerts test --config configs/paper.toml",
    no_args_is_help=True,
)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file whose \\[alerts] names the channels.")
]

#: How to add a channel, printed when the config has none.
HOW_TO_ADD = """\
Add one to the config:

  [[alerts.channels]]
  name = "discord"
  url_env = "HFLITE_ALERT_DISCORD"
  levels = ["warning", "critical"]

and its apprise URL to .env (never to the config: it holds tokens):

  HFLITE_ALERT_DISCORD=discord://webhook_id/webhook_token

docs/alerts.md lists the URL forms for Telegram, Discord, email and SMS."""


def _out() -> Console:
    return Console()  # made per call, so its width follows the environment of each call


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config, trades=False)
    except ConfigError as exc:
        fail(str(exc))


def _environment() -> dict[str, str]:
    """The process environment over ``./.env`` (the environment wins, as everywhere in hflite)."""
    env: dict[str, str] = {}
    if Path(".env").is_file():
        from dotenv import dotenv_values

        env.update({k: v for k, v in dotenv_values(".env").items() if v is not None})
    env.update(os.environ)
    return env


def _no_channels(config: Path | None) -> None:
    where = f"in {config}" if config is not None else "(no --config given)"
    _out().print(f"No alert channels configured {escape(where)}.", highlight=False)
    _out().print(escape(HOW_TO_ADD), highlight=False)


@alerts_app.command("test")
def send_test_alert(config: ConfigOpt = None) -> None:
    """Send a test alert to every configured channel now (with the retries) and show which worked;
    exits 1 when any failed.

    Example: hflite alerts test --config configs/paper.toml
    """
    from hflite.ops.alerts import send_test

    settings = _settings(config)
    alerts = settings.alerts
    if not alerts.channels:
        _no_channels(config)
        raise typer.Exit(1)
    if not alerts.enabled:
        _out().print("[yellow]alerts are disabled ([alerts] enabled = false): testing the channels anyway[/]")
    rows = send_test(alerts, _environment(), run_id="alerts-test")
    table = Table(title="alert test")
    table.add_column("channel")
    table.add_column("ok")
    table.add_column("error", overflow="fold")
    for name, ok, error in rows:
        table.add_row(escape(name), "[green]yes[/]" if ok else "[red]no[/]", escape(error) or "-")
    _out().print(table)
    failed = [name for name, ok, _ in rows if not ok]
    if failed:
        _out().print(f"[red]{len(failed)} of {len(rows)} channels failed:[/] {escape(', '.join(failed))}")
        raise typer.Exit(1)
    _out().print(f"[green]all {len(rows)} channels delivered the test alert[/]")


@alerts_app.command("channels")
def list_channels(config: ConfigOpt = None) -> None:
    """List the configured channels: their levels and kinds, the variable holding each URL, whether it
    is set and which service apprise reads in it (the URL itself is never shown).

    Example: hflite alerts channels --config configs/paper.toml
    """
    from hflite.ops.alerts import AlertConfigError, channel_service

    settings = _settings(config)
    alerts = settings.alerts
    if not alerts.channels:
        _no_channels(config)
        return
    env = _environment()
    table = Table(title="alert channels" + ("" if alerts.enabled else " (alerts disabled)"))
    for col in ("channel", "levels", "kinds", "variable", "set", "service"):
        table.add_column(col, overflow="fold")
    for ch in alerts.channels:
        is_set = bool((env.get(ch.url_env) or "").strip())
        if not is_set:
            service = "-"
        else:
            try:
                service = escape(channel_service(ch, env))
            except AlertConfigError:
                service = "[red]invalid URL[/]"
        table.add_row(
            escape(ch.name),
            ", ".join(ch.levels),
            escape(", ".join(ch.kinds)) or "all",
            escape(ch.url_env),
            "[green]yes[/]" if is_set else "[red]no[/]",
            service,
        )
    _out().print(table)
    s = alerts
    _out().print(
        f"dedup {s.dedup_s:g} s · at most {s.per_minute}/min per channel · {s.retries} retries from "
        f"{s.retry_base_s:g} s · timeout {s.timeout_s:g} s · fills {'on' if s.fills else 'off'}",
        highlight=False,
    )
