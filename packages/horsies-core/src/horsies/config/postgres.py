"""`PostgresConfig`: how the broker connects, and the checks that keep a bad URL (and its password)
away from libpq's error messages and from logs."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, Final

from pydantic import Field, field_validator

from horsies import env
from horsies.config.model import ConfigModel
from horsies.errors import ConfigurationError, ErrorCode
from horsies.redact import MASK, SCHEME_RE, credential_ends, mask_database_url, url_password

__all__ = ["PostgresConfig"]

_ACCEPTED_SCHEMES: Final = ("postgresql+psycopg", "postgresql", "postgres")
_EXAMPLE_URL: Final = "postgresql+psycopg://user:password@localhost:5432/dbname"


_URL_ENCODING_HELP: Final = (
    "percent-encode special characters of the user name and password\n"
    "('%' as %25, ' ' as %20, '@' as %40, ':' as %3A, '/' as %2F),\n"
    "and use only libpq connection parameters in the query string"
)


def _check_libpq_syntax(url: str, *, deferrable: bool = True) -> None:
    """Refuse (E203) a URL that libpq cannot parse, showing libpq's complaint password-masked.

    libpq quotes the offending part of a URL in its message (for a badly escaped password, the
    password itself), so such a URL must never reach a connection attempt whose error is logged.

    In a worker child (``HORSIES_CHILD_PROCESS=1``) that has not loaded psycopg, a `deferrable`
    check is left to `PostgresConfig.check_libpq_syntax`, which the app runs when it creates its
    broker: the worker's main process has checked the same URL already, and a child whose tasks
    send nothing then never loads the database driver (about 10 MiB per child).
    """
    if deferrable and env.flag(env.CHILD_PROCESS) and "psycopg" not in sys.modules:
        return
    try:
        # Lazy: a worker child that leaves this check to its broker must not load psycopg.
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:  # pragma: no cover - psycopg without libpq: refused at connect time
        return
    scheme = SCHEME_RE.match(url)
    conninfo = f"postgresql://{url[scheme.end() :]}" if scheme is not None else url
    try:
        conninfo_to_dict(conninfo)
    except Exception as exc:
        complaint = str(exc).strip() or type(exc).__name__
        password = url_password(url)
        if password:
            complaint = complaint.replace(password, MASK)
        error = ConfigurationError(
            "invalid database URL",
            code=ErrorCode.BROKER_INVALID_URL,
            notes=[
                f"libpq: {mask_database_url(complaint)}",
                f"database_url: {mask_database_url(url)}",
            ],
            help_text=_URL_ENCODING_HELP,
        )
        raise error from None
    libpq_at, loose_at = credential_ends(url, scheme.end() if scheme is not None else 0, len(url))
    if loose_at > libpq_at:
        # libpq would cut the user name or password at a raw "@" or "/": it would connect with
        # part of the password and show the rest as a host or database name in its errors.
        raise ConfigurationError(
            "invalid database URL",
            code=ErrorCode.BROKER_INVALID_URL,
            notes=[
                "the user name or password contains a raw '@' or '/'",
                f"database_url: {mask_database_url(url)}",
            ],
            help_text=_URL_ENCODING_HELP,
        )


class PostgresConfig(ConfigModel):
    """Connection settings of the PostgreSQL broker.

    `database_url` accepts ``postgresql+psycopg://``, ``postgresql://`` and ``postgres://``.
    The pool keeps `pool_size` connections and opens up to `max_overflow` more under load; with
    `pool_pre_ping` each connection is checked before use; `echo` logs SQL at DEBUG level.
    Never print `database_url` itself: use `masked_url`.
    """

    database_url: str
    pool_pre_ping: bool = True
    pool_size: int = Field(default=5, ge=0)
    max_overflow: int = Field(default=10, ge=0)
    pool_timeout: int = Field(default=30, gt=0)
    pool_recycle: int = Field(default=1800, gt=0)
    echo: bool = False

    @field_validator("database_url")
    @classmethod
    def _check_scheme(cls, value: str) -> str:
        match = SCHEME_RE.match(value)
        scheme = match.group(1) if match is not None else None
        if scheme is not None and scheme.lower() in _ACCEPTED_SCHEMES:
            _check_libpq_syntax(value)
            return value
        error = ConfigurationError(
            "invalid database URL scheme",
            code=ErrorCode.BROKER_INVALID_URL,
            help_text=(
                f"use a URL such as {_EXAMPLE_URL}\n"
                "(postgresql:// and postgres:// are accepted too; horsies always connects\n"
                "with psycopg 3, so other drivers such as asyncpg or psycopg2 are not supported)"
            ),
        )
        if scheme is None:
            error.with_note("no scheme found: the URL must start with 'postgresql+psycopg://'")
        else:
            error.with_note(f"scheme: '{scheme}'")
        error.with_note(f"database_url: {mask_database_url(value)}")
        raise error

    def check_libpq_syntax(self) -> None:
        """Refuse (E203) a `database_url` that libpq cannot parse.

        Done when the config is built, except in worker children, where the app does it when it
        creates its broker (see `Horsies.get_broker`), so that importing an app in a child does not
        load psycopg.

        Raises:
            ConfigurationError: E203, with libpq's complaint (password masked).
        """
        _check_libpq_syntax(self.database_url, deferrable=False)

    @property
    def conninfo(self) -> str:
        """The URL in plain libpq form (``postgresql://...``), as psycopg connects with it."""
        match = SCHEME_RE.match(self.database_url)
        rest = self.database_url[match.end() :] if match is not None else self.database_url
        return f"postgresql://{rest}"

    @property
    def masked_url(self) -> str:
        """`database_url` with the password replaced by ``***`` (for logs and banners)."""
        return mask_database_url(self.database_url)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # repr() and str() of this config, and of an AppConfig holding it, show the masked URL.
        for name, value in super().__repr_args__():
            yield name, (self.masked_url if name == "database_url" else value)
