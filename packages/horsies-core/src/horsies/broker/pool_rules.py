"""What the broker's connection pools decide, apart from their I/O: sizes and limits, which idle
connection to hand out, when to check one first, how long to wait before connecting again, and
what to say when no connection comes.

The two pools (``driver_sync.SyncPool``, one per broker, shared by threads; ``driver_async``'s pool,
one per event loop) keep their idle connections in a :class:`IdleStack` and ask the functions here.
They open connections in the caller that needs one, never in background threads or tasks, so a
closed pool leaves nothing running.
"""

from __future__ import annotations

import select
import threading
import time
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar

import psycopg
from psycopg import pq

from horsies.broker.driver_errors import NoConnection
from horsies.config import PostgresConfig
from horsies.logs import get_logger
from horsies.redact import mask_database_url

__all__ = [
    "ConnectFailures",
    "IdleStack",
    "PoolLimits",
    "PoolState",
    "Pooled",
    "Take",
    "checkout_wait",
    "has_unread_input",
    "next_delay",
    "pool_name",
]

_log = get_logger("broker")


class Pooled(Protocol):
    """What the pool bookkeeping reads of a connection (sync or async)."""

    @property
    def closed(self) -> bool: ...
    @property
    def broken(self) -> bool: ...
    @property
    def pgconn(self) -> pq.abc.PGconn: ...


C = TypeVar("C", bound=Pooled)

PRE_PING_IDLE_S: Final = 1.0
"""A connection idle for longer is checked with an empty statement before it is handed out (with
``pool_pre_ping``). One that was just used is known to be alive, and a round trip on every checkout
would halve the single-send rate."""
_RECONNECT_FIRST_S: Final = 0.25
_RECONNECT_MAX_S: Final = 2.0
_CONNECT_TIMEOUT_MAX_S: Final = 10.0
_LOG_EVERY_S: Final = 10.0
_POLLIN: Final = getattr(select, "POLLIN", 1)
_MAX_IDLE_S: Final = 600.0
"""Idle connections beyond ``pool_size`` are closed after this long."""
_SWEEP_EVERY_S: Final = 1.0
"""How often a returning connection also sweeps the idle ones (server-ended, idle too long)."""


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """The sizes and times of one pool, from `PostgresConfig`.

    ``min_size`` connections (``pool_size``) are kept when idle; up to ``max_size``
    (``pool_size + max_overflow``, at least 1) exist at once; a checkout waits at most
    ``timeout_s`` (``pool_timeout``); a connection older than ``lifetime_s`` (``pool_recycle``) is
    closed instead of reused.
    """

    name: str
    min_size: int
    max_size: int
    timeout_s: float
    lifetime_s: float
    pre_ping: bool
    masked_url: str = ""
    """The database URL without its password, to name in connection errors."""

    @classmethod
    def from_config(cls, config: PostgresConfig, name: str, size: int | None = None) -> PoolLimits:
        """Limits of a pool named ``name``; ``size`` gives a small pool (at most ``size``
        connections, one kept) instead of the configured sizes."""
        min_size = config.pool_size if size is None else 1
        max_size = config.pool_size + config.max_overflow if size is None else size
        return cls(
            name=name,
            min_size=min_size,
            max_size=max(1, max_size),
            timeout_s=float(config.pool_timeout),
            lifetime_s=float(config.pool_recycle),
            pre_ping=config.pool_pre_ping,
            masked_url=config.masked_url,
        )

    def connect_timeout(self, remaining_s: float) -> int:
        """libpq's ``connect_timeout`` (whole seconds, at least 2: libpq's minimum) for an attempt
        that may take at most ``remaining_s``."""
        return max(2, int(min(_CONNECT_TIMEOUT_MAX_S, remaining_s) + 0.999))


_MIN_CHECKOUT_WAIT_S: Final = 0.1


def checkout_wait(config: PostgresConfig, deadline: float | None) -> float | None:
    """How long one checkout may wait: ``pool_timeout`` (None), or less when the caller's own
    ``deadline`` (``time.monotonic()``, a result wait's) comes first."""
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    return max(_MIN_CHECKOUT_WAIT_S, min(float(config.pool_timeout), remaining))


def next_delay(attempt: int) -> float:
    """The wait after the ``attempt``-th failed connection attempt (1-based): 0.25, 0.5, 1, 2 s,
    then 2 s each time, so a pool is back within about 2 s of the database."""
    return min(_RECONNECT_MAX_S, _RECONNECT_FIRST_S * 2 ** (attempt - 1))


@dataclass(slots=True)
class _Idle(Generic[C]):
    conn: C
    opened_at: float
    returned_at: float


class IdleStack(Generic[C]):
    """The connections of one pool: when each was opened, and the idle ones, most recently
    returned on top.

    Handing out the connection returned last keeps one server process (with its caches warm)
    serving a sequential caller: about a tenth more single sends per second than taking turns over
    every idle connection, and the connections left idle are the first to be closed. Not
    thread-safe: the sync pool holds its lock around every call.
    """

    __slots__ = ("_items", "_opened")

    def __init__(self) -> None:
        self._items: list[_Idle[C]] = []
        self._opened: dict[C, float] = {}  # every open connection of the pool, idle or not

    def __len__(self) -> int:
        return len(self._items)

    def opened(self, conn: C, now: float) -> None:
        """Record a new connection of the pool."""
        self._opened[conn] = now

    def forget(self, conn: C) -> None:
        """Stop counting a connection that was closed or discarded while checked out."""
        self._opened.pop(conn, None)

    def opened_at(self, conn: C, default: float) -> float:
        """When ``conn`` was opened (``default`` for an unknown connection)."""
        return self._opened.get(conn, default)

    def push(self, conn: C, now: float) -> None:
        """A connection came back."""
        self._items.append(_Idle(conn, self._opened.get(conn, now), now))

    def pop(self, limits: PoolLimits, now: float) -> tuple[C | None, bool, list[C]]:
        """The connection to hand out (None when none is idle), whether to ping it first, and the
        connections to close: too old, closed, or with unread input (the server ended them)."""
        stale: list[C] = []
        while self._items:
            item = self._items.pop()
            conn = item.conn
            if conn.closed or now - item.opened_at > limits.lifetime_s or has_unread_input(conn):
                self.forget(conn)
                stale.append(conn)
                continue
            ping = limits.pre_ping and now - item.returned_at > PRE_PING_IDLE_S
            return conn, ping, stale
        return None, False, stale

    def sweep(self, limits: PoolLimits, now: float) -> list[C]:
        """The idle connections to close now: those the server ended (unread input), and those
        beyond ``min_size`` idle for more than 10 minutes (oldest first)."""
        keep: list[_Idle[C]] = []
        stale: list[C] = []
        for item in self._items:
            if item.conn.closed or has_unread_input(item.conn):
                stale.append(item.conn)
            else:
                keep.append(item)
        excess = len(keep) - limits.min_size
        while excess > 0 and keep and now - keep[0].returned_at > _MAX_IDLE_S:
            stale.append(keep.pop(0).conn)
            excess -= 1
        self._items = keep
        for conn in stale:
            self.forget(conn)
        return stale

    def drain(self) -> list[C]:
        """Every idle connection (the pool is closing); the others are forgotten as they return."""
        conns = [item.conn for item in self._items]
        self._items = []
        for conn in conns:
            self.forget(conn)
        return conns

    def open_count(self) -> int:
        """Connections of the pool, idle or checked out."""
        return len(self._opened)

    def all_open(self) -> list[C]:
        """Every connection of the pool, idle or checked out (to close them all)."""
        return list(self._opened)


@dataclass(frozen=True, slots=True)
class Take(Generic[C]):
    """What a checkout does next: use ``conn`` (after a ping when ``ping``), open a connection
    (``open_slot``: a place was reserved for it), or wait for one to come back (neither); and
    first close the ``stale`` connections found on the way."""

    conn: C | None
    ping: bool
    open_slot: bool
    stale: list[C]


class PoolState(Generic[C]):
    """The bookkeeping of one pool, without I/O or locking: the sync pool calls it under its lock,
    the async pool from its one event loop."""

    __slots__ = ("closed", "failures", "idle", "limits", "opening", "swept_at")

    def __init__(self, limits: PoolLimits) -> None:
        self.limits = limits
        self.idle: IdleStack[C] = IdleStack()
        self.opening = 0
        self.closed = False
        self.failures = ConnectFailures(limits.name, limits.masked_url)
        self.swept_at = 0.0

    def take(self, now: float) -> Take[C]:
        """The next step of a checkout."""
        if self.closed:
            raise RuntimeError("the broker is closed")
        conn, ping, stale = self.idle.pop(self.limits, now)
        if conn is not None:
            return Take(conn, ping, False, stale)
        if self.idle.open_count() + self.opening < self.limits.max_size:
            self.opening += 1
            return Take(None, False, True, stale)
        return Take(None, False, False, stale)

    def opened(self, conn: C | None, now: float) -> None:
        """The reserved place got its connection (``conn``), or the attempt was given up (None)."""
        self.opening -= 1
        if conn is not None:
            self.idle.opened(conn, now)

    def give_back(self, conn: C, now: float) -> list[C]:
        """A checked-out connection returns: the connections to close now (it, when it is broken,
        too old or the pool is closed; idle ones that went stale)."""
        item_age = now - self.idle.opened_at(conn, now)
        if self.closed or conn.closed or conn.broken or item_age > self.limits.lifetime_s:
            self.idle.forget(conn)
            return [conn]
        self.idle.push(conn, now)
        # A checkout checks the connection it hands out; sweeping the others on every return
        # costs a poll per idle connection per call for what a periodic look finds as well.
        if now - self.swept_at < _SWEEP_EVERY_S:
            return []
        self.swept_at = now
        return self.idle.sweep(self.limits, now)

    def discard(self, conn: C) -> list[C]:
        """A checked-out connection turned out dead: forget it; its idle siblings most likely
        died with it (restart, mass termination), so the stale ones among them are closed too."""
        self.idle.forget(conn)
        return [conn, *self.idle.sweep(self.limits, time.monotonic())]

    def close(self) -> list[C]:
        """The pool closes: every idle connection is closed now, the others when they return."""
        self.closed = True
        return self.idle.drain()


def has_unread_input(conn: Pooled) -> bool:
    """True when the server sent something to a connection nobody is using (zero-timeout poll, no
    round trip): on an idle pooled connection that is the FATAL message and EOF of a terminated
    backend. Also True when the socket is unusable."""
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return True
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, _POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([fd], [], [], 0)
        return bool(readable)
    except (OSError, ValueError):
        return True


_LASTING_CONNECT_ERRORS: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (("password authentication failed",), "the password was refused"),
    (("no password supplied",), "the server asks for a password and the URL has none"),
    (("authentication failed",), "authentication was refused"),
    (("no pg_hba.conf entry",), "the server's pg_hba.conf refuses this user or host"),
    (('role "', "does not exist"), "the user (role) does not exist"),
    (('database "', "does not exist"), "the database does not exist"),
    (("failed to resolve host",), "the host name does not resolve"),
    (("could not translate host name",), "the host name does not resolve"),
    # The resolver's own words for "no such name" (older psycopg passes them on as they are);
    # "Temporary failure in name resolution" is not among them: the resolver may come back.
    (("Name or service not known",), "the host name does not resolve"),
    (("nodename nor servname provided",), "the host name does not resolve"),
    (("No address associated with hostname",), "the host name does not resolve"),
)
"""Connection failures that waiting cannot heal: the pieces of libpq's or PostgreSQL's message
that all appear in one (they carry no SQLSTATE at connect time), and what the user is told. The
server's own texts are in English unless its lc_messages says otherwise; a translated one is
retried as transient."""


def lasting_connect_problem(exc: BaseException) -> str | None:
    """What is wrong when a connection attempt failed for a reason waiting cannot fix, else None
    (server down or starting, refused, timed out, too many connections: worth retrying)."""
    text = str(exc)
    for pieces, meaning in _LASTING_CONNECT_ERRORS:
        if all(piece in text for piece in pieces):
            return meaning
    return None


class ConnectFailures:
    """The last failed connection attempt of a pool: logged at most every 10 s while the database
    stays out of reach, and given as the reason when a checkout gets no connection."""

    def __init__(self, pool_name: str, masked_url: str = "") -> None:
        self._name = pool_name
        self._url = masked_url
        self._lock = threading.Lock()
        self._error: str | None = None
        self._logged_at: float | None = None

    def record(self, exc: BaseException) -> NoConnection | None:
        """A connection attempt failed with ``exc``: the error to raise at once when waiting
        cannot help (a wrong password, user, database or host), else None (keep trying)."""
        text = mask_database_url(" ".join(str(exc).split()) or type(exc).__name__)
        now = time.monotonic()
        with self._lock:
            self._error = text
            due = self._logged_at is None or now - self._logged_at >= _LOG_EVERY_S
            if due:
                self._logged_at = now
        if due:
            _log.warning("error connecting in %r: %s", self._name, text)
        lasting = lasting_connect_problem(exc)
        if lasting is None:
            return None
        return NoConnection(
            f"cannot connect to {self._url or 'the database'}: {lasting}; waiting will not "
            f"help, check the database URL ({text})",
            unreachable=False,
        )

    def clear(self) -> None:
        """A connection attempt succeeded."""
        with self._lock:
            self._error = None
            self._logged_at = None

    def no_connection(self, timeout_s: float, max_size: int) -> NoConnection:
        """The error for a checkout that got no connection within ``timeout_s``."""
        with self._lock:
            error = self._error
        # Cleared by every successful connect: a standing error is the pool's current trouble.
        if error is not None:
            return NoConnection(
                f"database unreachable: no connection within {timeout_s:g}s;"
                f" last connection attempt: {error}",
                unreachable=True,
            )
        return NoConnection(
            f"no free database connection within {timeout_s:g}s: all {max_size} connections of the"
            " pool are in use (raise pool_size/max_overflow or pool_timeout)",
            unreachable=False,
        )


_pool_numbers: dict[str, int] = {}
_pool_numbers_lock = threading.Lock()


def pool_name(base: str) -> str:
    """``base``, then ``base-2``, ``base-3``, ... for the pools of later brokers of the process:
    their log lines tell them apart."""
    with _pool_numbers_lock:
        n = _pool_numbers.get(base, 0) + 1
        _pool_numbers[base] = n
    return base if n == 1 else f"{base}-{n}"
