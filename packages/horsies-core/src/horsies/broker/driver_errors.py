"""Driver errors, translated into `BrokerError` at the boundary of the broker: every psycopg
exception raised while running an operation becomes one, with the password masked and with what it
means for the caller (the database unreachable, or the connection lost mid-statement)."""

from __future__ import annotations

import psycopg

from horsies.broker.errors import BrokerError
from horsies.redact import mask_database_url

__all__ = ["NoConnection", "is_connection_lost", "translate_error"]

# Server-side terminations: admin_shutdown (pg_terminate_backend, fast shutdown), crash_shutdown,
# cannot_connect_now (starting up or shutting down).
_TERMINATED_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


class NoConnection(psycopg.OperationalError):
    """Raised by the broker's pools when no connection came in time: says whether connecting
    failed (``unreachable``, with the reason) or every connection was busy."""

    def __init__(self, message: str, *, unreachable: bool) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def is_connection_lost(exc: BaseException) -> bool:
    """True for a driver error meaning the connection broke (not an error of the statement)."""
    if isinstance(exc, NoConnection) or not isinstance(exc, psycopg.OperationalError):
        return False
    sqlstate = exc.sqlstate
    # No SQLSTATE: a client-side connection failure ("server closed the connection unexpectedly",
    # "consuming input failed", "the connection is closed", ...).
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _TERMINATED_SQLSTATES


def translate_error(exc: psycopg.Error, action: str) -> BrokerError:
    """BrokerError for a driver error raised while doing ``action`` (password-masked message)."""
    detail = mask_database_url(" ".join(str(exc).split()) or type(exc).__name__)
    if isinstance(exc, NoConnection):
        return BrokerError(f"{action} failed: {detail}", unreachable=exc.unreachable)
    if is_connection_lost(exc):
        return BrokerError(
            f"{action} failed: connection to the database lost: {type(exc).__name__}: {detail}",
            sqlstate=exc.sqlstate,
            connection_lost=True,
        )
    return BrokerError(f"{action} failed: {type(exc).__name__}: {detail}", sqlstate=exc.sqlstate)
