"""The broker's own exception: driver errors are translated to it at the broker boundary."""

from __future__ import annotations

import psycopg

from horsies.config import mask_database_url

__all__ = ["BrokerError", "translate_error"]


class BrokerError(Exception):
    """A database operation of the broker failed (connection lost, pool timeout, SQL error, ...).

    The message never contains a password; ``sqlstate`` is the PostgreSQL error code when there is
    one, and the original driver exception is chained as ``__cause__``.
    """

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def translate_error(exc: psycopg.Error, action: str) -> BrokerError:
    """BrokerError for a driver error raised while doing ``action`` (password-masked message)."""
    detail = mask_database_url(str(exc).strip() or type(exc).__name__)
    return BrokerError(f"{action} failed: {type(exc).__name__}: {detail}", sqlstate=exc.sqlstate)
