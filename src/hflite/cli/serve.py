"""``hflite serve``: the control API (and, on request, the Telegram bot) over a run's journal, alone."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from hflite.cli_errors import fail


def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="TOML config file of the run.")],
    journal: Annotated[
        Path | None,
        typer.Option(help="The run's journal (default var/journal/<run name>.sqlite of the config)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address (default \\[api] host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default \\[api] port, 8765).")] = None,
    insecure_remote: Annotated[
        bool, typer.Option("--insecure-remote", help="Allow a non-loopback --host without TLS (a warning).")
    ] = False,
    telegram: Annotated[
        bool,
        typer.Option(
            "--telegram",
            help="Also run the Telegram bot (\\[telegram] in the config). Run the bot in one process only: "
            "`hflite run` starts it when \\[telegram] enabled = true.",
        ),
    ] = False,
) -> None:
    """Serve the control API over a run's journal without trading: start it before, beside or after `hflite run`.

    Commands (kill, pause, close-all, resume) are queued in the journal and apply at the runtime's next bar-time; while no runtime runs, every answer says so. Needs a bearer token in .env (\\[api] token_env, default HFLITE_API_TOKEN).
    Example: hflite serve --config configs/paper.toml --port 8765
    """  # noqa: E501  (one line per paragraph: the help wraps it to the terminal)
    from hflite.cli import _load
    from hflite.engine.live import default_journal
    from hflite.ops.alerts import AlertConfigError
    from hflite.ops.api import ApiError
    from hflite.ops.watch import OpsKit

    settings = _load(config, None)
    path = journal if journal is not None else default_journal(settings)
    err = Console(stderr=True)
    try:
        kit = OpsKit(
            settings, path, api=True, host=host, port=port, insecure_remote=insecure_remote,
            in_process=False, alerts=False, telegram=telegram,
        )  # fmt: skip
        lines = kit.start()
    except (ApiError, AlertConfigError, OSError) as exc:
        fail(str(exc))
    for text in lines:
        colour = "yellow" if text.startswith("WARNING") else "green"
        err.print(f"[{colour}]{escape(text)}[/]", highlight=False, soft_wrap=True)
    rt = kit.view.runtime()
    err.print(f"journal {path}: runtime {rt.state} ({escape(rt.detail)})", highlight=False, soft_wrap=True)
    try:
        while kit.server is not None and kit.server.thread is not None and kit.server.thread.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        kit.stop()
