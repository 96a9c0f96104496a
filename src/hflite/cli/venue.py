"""``hflite venue``: the venues a run can trade through. ``venue check`` connects to a configured broker
and prints what it sees; ``venue fake-broker`` serves the local fake broker that paper runs and the
tests trade against."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

venue_app = typer.Typer(
    help="Venues: check a configured broker (keys, account, clock, latency), or serve a local fake of one "
    "(Alpaca, Binance for ccxt, OANDA, IB's TWS, or the fake broker) for paper runs and tests.\n\n"
    "Example: hflite venue check --config configs/alpaca_paper.toml",
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


@venue_app.command("check")
def check(
    config: Annotated[
        list[Path],
        typer.Option("--config", "-c", help="TOML config whose [venue] to check; repeat for several."),
    ],
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a setting, e.g. venue.url=http://127.0.0.1:8765."),
    ] = None,
) -> None:
    r"""Connect to each configured broker venue and print its account, cash, buying power, positions, open orders, clock skew and latency.

    Keys come from the variables the config's \[venue] names (environment or .env) and are never printed. Exits 1 when any venue fails, with the reason.
    Example: hflite venue check --config configs/alpaca_paper.toml --config configs/oanda_practice.toml
    """  # noqa: E501  (one line per paragraph: the help wraps it to the terminal)
    from rich.console import Console
    from rich.table import Table

    from hflite.cli import _load
    from hflite.execution.venues.check import check_venue

    console = Console()
    failed = 0
    for path in config:
        result = check_venue(_load(path, sets))
        where = f"{result.kind} at {result.endpoint}" + (" (LIVE)" if result.live else "")
        if not result.ok:
            failed += 1
            console.print(f"[red]FAIL[/red] {path}: venue {where}: {result.error}", highlight=False)
            continue
        table = Table(title=f"{path}: venue {where}", show_header=False)
        table.add_column("", style="bold")
        table.add_column("")
        for key, value in result.account.items():
            table.add_row(key.replace("_", " "), _fmt(value))
        for ccy, amount in sorted(result.cash.items()):
            table.add_row(f"cash {ccy}", f"{amount:,.2f}")
        table.add_row("positions", str(len(result.positions)))
        table.add_row("open orders", str(len(result.open_orders)))
        skew = result.clock_skew_s
        table.add_row("clock skew", "n/a" if skew is None else f"{skew:+.3f} s (venue minus local)")
        table.add_row("connect", f"{result.connect_ms:.1f} ms" if result.connect_ms is not None else "n/a")
        table.add_row("latency", _ms(result.latency_ms, "per request"))
        table.add_row("snapshot", _ms(result.snapshot_ms, "(account, positions, orders, fills)"))
        console.print(table)
        if result.positions:
            pos = Table(title="positions")
            for col in ("symbol", "qty", "avg price"):
                pos.add_column(col, justify="right" if col != "symbol" else "left")
            for p in result.positions:
                pos.add_row(p.symbol, f"{p.qty:g}", f"{p.avg_price:,.4f}")
            console.print(pos)
        if result.open_orders:
            orders = Table(title="open orders")
            for col in ("client id", "symbol", "side", "type", "qty", "filled", "price", "status"):
                orders.add_column(col)
            for o in result.open_orders:
                orders.add_row(
                    o.order_id or o.venue_order_id, o.symbol, o.side.value, o.type.value, f"{o.qty:g}",
                    f"{o.filled_qty:g}", "" if o.price is None else f"{o.price:g}", o.status.value,
                )  # fmt: skip
            console.print(orders)
        console.print(f"[green]OK[/green] {path}: venue {where}", highlight=False)
    if failed:
        raise typer.Exit(1)


def _ms(value: float | None, what: str) -> str:
    return "n/a" if value is None else f"{value:.1f} ms {what}"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


#: kind -> (the fake's module, its default port)
FAKES: dict[str, tuple[str, int]] = {
    "fakebroker": ("hflite.execution.venues.fakebroker", 8765),
    "alpaca": ("hflite.execution.venues.fakes.alpaca", 8766),
    "ccxt": ("hflite.execution.venues.fakes.binance", 8767),
    "oanda": ("hflite.execution.venues.fakes.oanda", 8768),
    "ib": ("hflite.execution.venues.fakes.tws", 7497),
}


@venue_app.command("fake")
def fake(
    kind: Annotated[
        str, typer.Argument(help="alpaca, ccxt (speaks Binance spot), oanda, ib (TWS) or fakebroker.")
    ],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML config: symbols, fees, slippage, data.")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Port on 127.0.0.1 (default: alpaca 8766, ccxt 8767, oanda 8768, ib 7497, fakebroker 8765)."
        ),
    ] = None,
    script: Annotated[
        Path | None,
        typer.Option(help="Behaviour script (TOML or JSON): faults, partial fills (docs/fake-broker.md)."),
    ] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting, e.g. data.dir=var/data.")
    ] = None,
) -> None:
    r"""Serve a local fake of a real broker's protocol on 127.0.0.1, filling orders with the sim venue's rules on the config's bars (driven clock: a recorded run with drive_clock = true moves its market).

    Point a run at it with --set venue.kind=KIND --set venue.url=<the printed address> --set venue.drive_clock=true. It accepts the keys (and OANDA's and IB's account id) in the variables the config's \[venue] names, else each fake's documented defaults (docs/venues/KIND.md). Stop with Ctrl-C.
    Example: hflite venue fake oanda --config configs/oanda_practice.toml
    """  # noqa: E501  (one line per paragraph: the help wraps it to the terminal)
    import importlib

    from hflite.cli import _load
    from hflite.cli_errors import fail
    from hflite.execution.venues.fakebroker import ScriptError

    if kind not in FAKES:
        fail(f"venue fake: unknown kind {kind!r} (one of {', '.join(FAKES)})")
    module_name, default_port = FAKES[kind]
    settings = _load(config, sets)
    serve = importlib.import_module(module_name).serve
    options: dict[str, object] = {}
    if script is not None:
        if kind == "ccxt":
            fail("venue fake ccxt: the Binance fake takes no behaviour script")
        options["script_path"] = script
    v = settings.venue
    if v.kind != kind:  # read the key variables as the fake's kind would (a paper config reads none)
        v = type(v).model_validate({**v.model_dump(), "kind": kind, "drive_clock": False, "live": False})
    key_id, secret = v.key_id, v.secret  # the config's key variables, read from the environment / .env
    account = v.account
    if kind in ("fakebroker", "alpaca", "ccxt"):
        options["key_id"] = key_id.get_secret_value() if key_id is not None else None
        options["secret"] = secret.get_secret_value() if secret is not None else None
    elif kind == "oanda":
        options["token"] = secret.get_secret_value() if secret is not None else None
    if kind in ("oanda", "ib") and account is not None:
        options["account_id" if kind == "oanda" else "account"] = account.get_secret_value()
    chosen = default_port if port is None else port
    try:
        serve(settings, port=chosen, **options)
    except ScriptError as exc:
        fail(str(exc))
    except OSError as exc:  # the port is taken, or not ours to bind
        fail(f"cannot listen on 127.0.0.1:{chosen}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        return
