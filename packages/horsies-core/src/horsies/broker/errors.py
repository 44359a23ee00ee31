"""The broker's own exception: driver errors are translated to it at the broker boundary."""

from __future__ import annotations

import psycopg

from horsies.redact import mask_database_url

__all__ = ["BrokerError", "NoConnection", "is_connection_lost", "translate_error"]

# Server-side terminations: admin_shutdown (pg_terminate_backend, fast shutdown), crash_shutdown,
# cannot_connect_now (starting up or shutting down).
_TERMINATED_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


class BrokerError(Exception):
    """A database operation of the broker failed (connection lost, pool timeout, SQL error, ...).

    The message never contains a password; ``sqlstate`` is the PostgreSQL error code when there is
    one, and the original driver exception is chained as ``__cause__``.

    Two flags tell connection trouble from errors of the statement itself:

    - ``unreachable``: no connection could be obtained within ``pool_timeout`` because connecting
      failed (server down, refused, unknown database, ...); the statement was never sent. The
      message says ``database unreachable`` and gives the reason of the last connection attempt.
    - ``connection_lost``: the connection broke while the statement was running (server restart,
      ``pg_terminate_backend``, network cut); whether it took effect is unknown. The message says
      ``connection to the database lost``.

    Both are transient: the same call may succeed once the database is back.
    """

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        unreachable: bool = False,
        connection_lost: bool = False,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.unreachable = unreachable
        self.connection_lost = connection_lost


class NoConnection(psycopg.OperationalError):
    """Raised by the broker's pools instead of psycopg-pool's ``PoolTimeout`` (whose message hides
    why no connection came): says whether connecting failed (``unreachable``, with the reason) or
    every connection was busy."""

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
