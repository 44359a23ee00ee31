"""The ``syce`` console script."""

from __future__ import annotations

import os
import sys

import click

from syce.config import NoDatabaseUrl, resolve_config

__all__ = ["main"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    "-d",
    default=None,
    help="PostgreSQL URL (default: $DATABASE_URL, then DATABASE_URL in ./.env).",
)
@click.option(
    "--tick-rate",
    "-t",
    type=click.FloatRange(min=0.1, max=60.0),
    default=4.0,
    show_default=True,
    help="Data refreshes per second.",
)
@click.option(
    "--frame-rate",
    "-f",
    type=click.FloatRange(min=1.0, max=240.0),
    default=60.0,
    show_default=True,
    help="UI frames per second.",
)
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
