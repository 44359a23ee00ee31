"""The per-process LISTEN connection shared by every waiter and worker loop of one database.

One daemon thread owns one autocommit connection. It waits on the connection's socket and on a
wake-up pipe with ``select``, reads notifications as they arrive and fans each one out to the
callbacks subscribed to its channel. Callbacks run on the listener thread and must be cheap and
non-blocking: set a ``threading.Event`` or hand over with ``loop.call_soon_threadsafe``.

NOTIFY only wakes; the tables are the truth. Notifications sent while the connection is down are
lost, so after a reconnect (exponential backoff 0.2 s → 2 s, like the pools; while the database
stays down every 5th failed attempt is logged) the thread re-issues LISTEN for every channel and
then calls the reconnect callbacks, whose job is to make their owners re-read (waiters) or
re-claim (workers). Every user of the listener keeps a bounded fallback poll as well.

Get the shared instance with :func:`acquire_listener` and give it back with :func:`release_listener`
(the thread stops when the last user releases it). Instances are per process: after ``fork`` a new
one is created on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import psycopg
from psycopg import sql

from horsies.logs import get_logger
from horsies.redact import mask_database_url

__all__ = [
    "NotificationListener",
    "Subscription",
    "acquire_listener",
    "release_listener",
]

_log = get_logger("listener")

NotifyCallback = Callable[[str, str], None]
"""Called with (channel, payload) on the listener thread."""

_BACKOFF_START_S: Final = 0.2
_BACKOFF_MAX_S: Final = 2.0
_LOG_EVERY_FAILURES: Final = 5
"""While the database stays down, log every 5th failed reconnect attempt (about every 10 s)."""
_HEALTH_CHECK_IDLE_S: Final = 60.0
_CONNECT_TIMEOUT_S: Final = 10


@dataclass(eq=False)
class Subscription:
    """A callback registered on one channel. Close it when done (idempotent)."""

    channel: str
    callback: NotifyCallback
    listener: NotificationListener = field(repr=False)
    active_event: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set while the server has LISTEN active on the channel (written by the listener thread)."""
    _closed: bool = field(default=False, repr=False)

    @property
    def active(self) -> bool:
        """True once the server has confirmed LISTEN on this channel (false again while
        reconnecting)."""
        return self.active_event.is_set() and not self._closed

    def wait_active(self, timeout: float) -> bool:
        """Block until LISTEN is active on the channel, at most ``timeout`` seconds; return whether
        it is."""
        return self.active_event.wait(timeout)

    async def wait_active_async(self, timeout: float) -> bool:
        """Async twin of :meth:`wait_active` (does not block the event loop)."""
        if self.active_event.is_set():
            return True
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def _set() -> None:
            if not done.done():
                done.set_result(None)

        def _wake() -> None:
            with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                loop.call_soon_threadsafe(_set)

        self.listener.call_when_active(self.channel, _wake)
        if self.active_event.is_set():
            return True
        try:
            async with asyncio.timeout(timeout):  # not wait_for: see waiters.AsyncWaiter.wait
                await done
        except TimeoutError:
            return self.active_event.is_set()
        return True

    def close(self) -> None:
        """Stop delivering notifications to this callback (UNLISTEN when it was the channel's last
        one)."""
        if not self._closed:
            self._closed = True
            self.listener.unsubscribe(self)


@dataclass(eq=False)
class _Channel:
    subscriptions: list[Subscription] = field(default_factory=list[Subscription])
    listening: bool = False
    on_active: list[Callable[[], None]] = field(default_factory=list[Callable[[], None]])


class NotificationListener:
    """Shared LISTEN connection of one process and one database (see the module docstring).

    Prefer :func:`acquire_listener` over constructing it: one connection then serves every
    subscriber.
    """

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._masked = mask_database_url(conninfo)
        self._pid = os.getpid()
        # Ownership: _channels, _reconnect_callbacks and _pending_commands are shared between caller
        # threads (subscribe/close) and the listener thread; always accessed under _lock.
        self._lock = threading.Lock()
        self._channels: dict[str, _Channel] = {}
        self._reconnect_callbacks: list[Callable[[], None]] = []
        self._closing = False
        self._force_reconnect = False
        self._connected = threading.Event()
        # Written by the listener thread only.
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="horsies-listener", daemon=True)
        self._thread.start()

    # -- public API --------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the LISTEN connection is up."""
        return self._connected.is_set()

    def subscribe(
        self, channel: str, callback: NotifyCallback, *, wait_s: float | None = 10.0
    ) -> Subscription:
        """Deliver every notification of ``channel`` to ``callback`` until the subscription is
        closed.

        Blocks until LISTEN is active, at most ``wait_s`` seconds (None or 0: do not wait); when
        that bound passes (database down) the subscription still works once the listener reconnects.
        """
        sub = Subscription(channel=channel, callback=callback, listener=self)
        with self._lock:
            if self._closing:
                raise RuntimeError("the notification listener is closed")
            chan = self._channels.setdefault(channel, _Channel())
            chan.subscriptions.append(sub)
            if chan.listening:
                sub.active_event.set()
        if not sub.active_event.is_set():
            self._wake()
            if wait_s and not sub.wait_active(wait_s):
                _log.warning(
                    "LISTEN %s not confirmed within %.1fs (database %s); relying on polling",
                    channel,
                    wait_s,
                    self._masked,
                )
        return sub

    def add_reconnect_callback(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (on the listener thread) after every reconnect; returns a remover."""
        with self._lock:
            self._reconnect_callbacks.append(callback)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._reconnect_callbacks.remove(callback)

        return remove

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and close the connection (prefer :func:`release_listener` for shared
        ones)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def force_reconnect(self) -> None:
        """Drop the connection as if it had been lost (tests and health checks)."""
        with self._lock:
            self._force_reconnect = True
        self._wake()

    # -- internals shared with Subscription --------------------------------------------------------

    def call_when_active(self, channel: str, fn: Callable[[], None]) -> None:
        """Call ``fn`` once LISTEN is active on ``channel``: at once if it already is, else later on
        the listener thread."""
        with self._lock:
            chan = self._channels.get(channel)
            if chan is None or chan.listening:
                run_now = True
            else:
                chan.on_active.append(fn)
                run_now = False
        if run_now:
            fn()

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove a subscription (prefer ``Subscription.close``)."""
        with self._lock:
            chan = self._channels.get(sub.channel)
            if chan is None or sub not in chan.subscriptions:
                return
            chan.subscriptions.remove(sub)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    # -- listener thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = _BACKOFF_START_S
        first = True
        failures = 0
        while not self._closing:
            try:
                self._connect()
            except Exception as exc:
                if failures % _LOG_EVERY_FAILURES == 0:
                    _log.warning(
                        "listener connection to %s failed (%d attempts): %s; retrying in %.1fs",
                        self._masked,
                        failures + 1,
                        _masked_error(exc),
                        backoff,
                    )
                failures += 1
                self._sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            backoff = _BACKOFF_START_S
            failures = 0
            if not first:
                _log.info("listener reconnected to %s", self._masked)
                self._run_reconnect_callbacks()
            first = False
            try:
                self._serve()
            except Exception as exc:
                if not self._closing:
                    _log.warning(
                        "listener connection to %s lost: %s; reconnecting",
                        self._masked,
                        _masked_error(exc),
                    )
            finally:
                self._disconnect()
            if not self._closing:
                self._sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _sleep(self, seconds: float) -> None:
        # Interruptible by close() through the wake-up pipe.
        with contextlib.suppress(OSError, ValueError):
            select.select([self._wake_r], [], [], seconds)
            self._drain_wake()

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wake_r, 4096):
                pass

    def _connect(self) -> None:
        conn = psycopg.Connection.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=_CONNECT_TIMEOUT_S,
            application_name="horsies-listener",
        )
        conn.add_notify_handler(self._on_notify)
        self._conn = conn
        with self._lock:
            self._force_reconnect = False
            for chan in self._channels.values():
                chan.listening = False
        self._sync_channels()
        self._connected.set()

    def _disconnect(self) -> None:
        self._connected.clear()
        with self._lock:
            for chan in self._channels.values():
                chan.listening = False
                for sub in chan.subscriptions:
                    sub.active_event.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _serve(self) -> None:
        conn = self._conn
        assert conn is not None
        last_traffic = time.monotonic()
        while not self._closing:
            if self._force_reconnect:
                raise ConnectionResetError("reconnect requested")
            self._sync_channels()
            timeout = max(0.0, _HEALTH_CHECK_IDLE_S - (time.monotonic() - last_traffic))
            readable, _, _ = select.select([conn.fileno(), self._wake_r], [], [], timeout)
            if self._wake_r in readable:
                self._drain_wake()
            if conn.fileno() in readable:
                last_traffic = time.monotonic()
                pgconn = conn.pgconn
                pgconn.consume_input()
                while (n := pgconn.notifies()) is not None:
                    enc = conn.info.encoding
                    self._dispatch(n.relname.decode(enc), n.extra.decode(enc))
                if pgconn.status != psycopg.pq.ConnStatus.OK:
                    raise psycopg.OperationalError("the listener connection was closed")
            elif not readable:
                # Idle for a long time: make sure the connection is still alive (half-open TCP).
                conn.execute("SELECT 1")
                last_traffic = time.monotonic()

    def _sync_channels(self) -> None:
        """Issue LISTEN/UNLISTEN so the server-side set matches the subscribed channels."""
        conn = self._conn
        if conn is None:
            return
        with self._lock:
            to_listen = [
                name for name, c in self._channels.items() if c.subscriptions and not c.listening
            ]
            to_unlisten = [name for name, c in self._channels.items() if not c.subscriptions]
        for name in to_unlisten:
            conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(name)))
            with self._lock:
                chan = self._channels.get(name)
                if chan is not None and not chan.subscriptions:
                    del self._channels[name]
        for name in to_listen:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
            with self._lock:
                chan = self._channels.get(name)
                if chan is None:
                    continue
                chan.listening = True
                for sub in chan.subscriptions:
                    sub.active_event.set()
                on_active, chan.on_active = chan.on_active, []
            for fn in on_active:
                self._safe_call(fn)

    def _on_notify(self, notify: psycopg.Notify) -> None:
        # Notifications that arrive while a LISTEN/SELECT 1 is executing come through here.
        self._dispatch(notify.channel, notify.payload)

    def _dispatch(self, channel: str, payload: str) -> None:
        with self._lock:
            chan = self._channels.get(channel)
            subs = list(chan.subscriptions) if chan is not None else []
        for sub in subs:
            try:
                sub.callback(channel, payload)
            except Exception:
                _log.exception("notification callback for channel %s failed", channel)

    def _run_reconnect_callbacks(self) -> None:
        with self._lock:
            callbacks = list(self._reconnect_callbacks)
        for cb in callbacks:
            self._safe_call(cb)

    @staticmethod
    def _safe_call(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            _log.exception("listener callback failed")


def _masked_error(exc: BaseException) -> str:
    return mask_database_url(" ".join(str(exc).split()) or type(exc).__name__)


# -- per-process registry --------------------------------------------------------------------------

_registry_lock = threading.Lock()
# (pid, conninfo) -> [listener, number of users]
_registry: dict[tuple[int, str], tuple[NotificationListener, int]] = {}


def acquire_listener(conninfo: str) -> NotificationListener:
    """The process's shared listener for ``conninfo`` (created on first use); pair with
    release_listener."""
    key = (os.getpid(), conninfo)
    with _registry_lock:
        for stale in [k for k in _registry if k[0] != key[0]]:
            del _registry[stale]  # inherited through fork: its thread does not exist here
        entry = _registry.get(key)
        if entry is None:
            listener = NotificationListener(conninfo)
            _registry[key] = (listener, 1)
            return listener
        _registry[key] = (entry[0], entry[1] + 1)
        return entry[0]


def release_listener(listener: NotificationListener) -> None:
    """Give back a listener from acquire_listener; the last user closes it."""
    with _registry_lock:
        key = next((k for k, (existing, _) in _registry.items() if existing is listener), None)
        if key is not None:
            users = _registry[key][1]
            if users > 1:
                _registry[key] = (listener, users - 1)
                return
            del _registry[key]
    listener.close()
