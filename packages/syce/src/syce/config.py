"""Where the database URL comes from: ``--database-url``, else ``DATABASE_URL``, else ``./.env``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from horsies.config import PostgresConfig

__all__ = ["NoDatabaseUrl", "read_dotenv", "resolve_config"]


class NoDatabaseUrl(Exception):
    """No URL was given on the command line, in the environment or in ``.env``."""


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` pairs of a ``.env`` file (``export`` prefixes, quotes and comments allowed)."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return values
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def resolve_config(
    database_url: str | None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> PostgresConfig:
    """The `PostgresConfig` to monitor; same URL forms as horsies (``ValueError`` if invalid)."""
    env = os.environ if environ is None else environ
    url = database_url or env.get("DATABASE_URL") or None
    if url is None:
        url = read_dotenv((cwd or Path.cwd()) / ".env").get("DATABASE_URL") or None
    if url is None:
        raise NoDatabaseUrl(
            "no database URL: pass --database-url/-d, set DATABASE_URL, or put DATABASE_URL "
            "in a .env file in the working directory"
        )
    return PostgresConfig(database_url=url, pool_size=1, max_overflow=1)
