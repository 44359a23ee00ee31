"""The broker's own exception. Driver errors are translated to it at the broker boundary
(``driver_errors``); this module does not import the driver, so code that only catches it stays
light."""

from __future__ import annotations

__all__ = ["BrokerError"]


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
