"""``hflite venue``: the venues a run can trade through; ``venue fake-broker`` serves the local fake
broker that paper runs and the tests trade against."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

venue_app = typer.Typer(
    help="Venues: serve the local fake broker (a broker API on 127.0.0.1 for paper runs and tests).\n\n"
    "Example: hflite venue fake-broker --config configs/paper.toml --port 8765",
    no_args_is_help=True,
)


@venue_app.command("fake-broker")
def fake_broker(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML config: symbols, fees, slippage, data.")
    ] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
    script: Annotated[
        Path | None,
        typer.Option(
            help="Behaviour script (TOML or JSON): faults, partial fills, delays (docs/fake-broker.md)."
        ),
    ] = None,
    clock: Annotated[
        str,
        typer.Option(
            help="driven (the run's recorded feed moves the market: `\\[venue] drive_clock = true`) or wall "
            "(market orders fill at the latest stored close; stops and limits as new bars reach the store)."
        ),
    ] = "driven",
    poll: Annotated[
        float, typer.Option(help="Wall clock: seconds between looks for new bars in the store.")
    ] = 5.0,
) -> None:
    """Serve the local fake broker: an Alpaca-style REST API plus a server-sent event stream of order updates on 127.0.0.1, filling orders with the sim venue's rules on the config's bars.

    Keys: HFLITE_BROKER_KEY_ID / HFLITE_BROKER_SECRET (default fake-key / fake-secret). Stop with Ctrl-C.
    Example: hflite venue fake-broker --config configs/paper.toml --port 8765
    """  # noqa: E501  (one line per paragraph: the help wraps it to the terminal)
    from hflite.cli import _load
    from hflite.cli_errors import fail
    from hflite.execution.venues.fakebroker import ScriptError, serve

    if clock not in ("driven", "wall"):
        fail(f"--clock: expected driven or wall, got {clock!r}")
    settings = _load(config, None)
    try:
        serve(settings, port=port, script_path=script, clock=clock, poll_s=poll)  # type: ignore[arg-type]
    except ScriptError as exc:
        fail(str(exc))
    except OSError as exc:  # the port is taken, or not ours to bind
        fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        return
