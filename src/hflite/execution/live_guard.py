"""The gate in front of real money: a run trades a venue's live endpoint only when the config says so
(``[venue] live = true``), the command line says so (``--live``), and a human confirms it.

The confirmation is typed text, ``LIVE <run name>`` (e.g. ``LIVE paper-btc-eur``), so an old shell
history line or a config meant for another run cannot start this one. On a terminal it is asked for;
without one (a service, a container) the variable ``HFLITE_CONFIRM_LIVE`` must hold that same text.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from hflite import redact
from hflite.config import CONFIRM_LIVE_ENV, SIMULATED_VENUES, Settings

__all__ = ["CONFIRM_LIVE_ENV", "LiveTradingRefused", "check_live", "confirmation_text"]


class LiveTradingRefused(Exception):
    """A run may not start: live trading is not configured, not asked for, or not confirmed. One line."""


def confirmation_text(settings: Settings) -> str:
    """What the user must type (or put in ``HFLITE_CONFIRM_LIVE``) to start this run live."""
    return f"LIVE {settings.run.name}"


def check_live(
    settings: Settings, live_flag: bool, *, confirm: Callable[[str], str] | None, is_tty: bool
) -> None:
    """Return when the run may start; raise ``LiveTradingRefused`` otherwise.

    ``live_flag`` is ``--live``; ``confirm`` asks the user a question and returns the typed answer
    (``input``), used only when ``is_tty``. A paper run (neither live) passes without a question.
    """
    venue = settings.venue
    if not venue.live and not live_flag:
        return
    if venue.live and not live_flag:
        raise LiveTradingRefused(
            f"venue {venue.kind} is configured for its live (real-money) endpoint: add --live to trade "
            "real money, or set [venue] live = false for its paper endpoint"
        )
    if not venue.live:
        if venue.kind in SIMULATED_VENUES:
            raise LiveTradingRefused(
                f"--live: the {venue.kind} venue is simulated and has no live endpoint: drop --live, or "
                "configure a broker venue with [venue] live = true"
            )
        raise LiveTradingRefused(
            f"--live: venue {venue.kind} is configured for its paper endpoint: set [venue] live = true "
            "to trade real money, or drop --live"
        )
    expected = confirmation_text(settings)
    if is_tty:
        _confirm_on_terminal(settings, expected, confirm)
        return
    given = os.environ.get(CONFIRM_LIVE_ENV)
    if given is None:
        raise LiveTradingRefused(
            f"live trading refused: no terminal to confirm on: set {CONFIRM_LIVE_ENV}={expected!r} to confirm"
        )
    if given.strip() != expected:
        raise LiveTradingRefused(f"live trading refused: {CONFIRM_LIVE_ENV} is not {expected!r}")


def _confirm_on_terminal(settings: Settings, expected: str, confirm: Callable[[str], str] | None) -> None:
    if confirm is None:
        raise LiveTradingRefused("live trading refused: no way to ask for confirmation")
    prompt = (
        f"Run {settings.run.name} will trade REAL MONEY on venue {settings.venue.kind} "
        f"({redact.sanitize_url(settings.venue.endpoint)}). Type {expected!r} to confirm: "
    )
    try:
        answer = confirm(prompt)
    except (EOFError, KeyboardInterrupt):
        raise LiveTradingRefused("live trading refused: not confirmed") from None
    if answer.strip() != expected:
        raise LiveTradingRefused(f"live trading refused: the confirmation was not {expected!r}")
