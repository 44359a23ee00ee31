"""The ``syce`` console script."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from syce.config import NoDatabaseUrl, resolve_config

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])


def per_second(
    flag: str, short: str, *, least: float, most: float, default: float, what: str
) -> Callable[[F], F]:
    """An option for how many ``what`` per second, within ``least`` and ``most``."""
    return click.option(
        flag,
        short,
        type=click.FloatRange(min=least, max=most),
        default=default,
        show_default=True,
        help=f"{what} per second.",
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    "-d",
    default=None,
    help="PostgreSQL URL (default: $DATABASE_URL, then DATABASE_URL in ./.env).",
)
@per_second("--tick-rate", "-t", least=0.1, most=60.0, default=4.0, what="Data refreshes")
@per_second("--frame-rate", "-f", least=1.0, most=240.0, default=60.0, what="UI frames")
def main(database_url: str | None, tick_rate: float, frame_rate: float) -> None:
    """Syce: a terminal dashboard for a horsies cluster (reads its PostgreSQL database)."""
    try:
        config = resolve_config(database_url)
    except NoDatabaseUrl as exc:
        raise click.UsageError(str(exc)) from exc
    except ValueError as exc:
        click.echo(f"syce: {exc}", err=True)
        sys.exit(2)
    os.environ["TEXTUAL_FPS"] = str(int(frame_rate))
    # Imported only now: Textual reads its frame rate from the environment when it is imported.
    from syce.app import SyceApp

    SyceApp(config, tick_rate=tick_rate).run()
