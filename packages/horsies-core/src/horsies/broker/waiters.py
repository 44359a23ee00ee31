"""Routing of ``task_done`` / ``workflow_done`` notifications to the waiters of one broker.

One subscription per channel on the shared listener serves every waiting ``get_result`` (or
workflow ``get``) call: the payload (a task or workflow id) is looked up in a dict, so a
notification costs O(1) however many calls are waiting. After a listener reconnect every waiter is
poked to re-read its row, because notifications sent while the connection was down are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Final, Literal

from horsies.broker.listener import NotificationListener, Subscription

__all__ = [
    "TASK_DONE_CHANNEL",
    "WORKFLOW_DONE_CHANNEL",
    "AsyncWaiter",
    "ResultWaiters",
    "SyncWaiter",
    "WakeReason",
]

TASK_DONE_CHANNEL: Final = "task_done"
WORKFLOW_DONE_CHANNEL: Final = "workflow_done"
_SUBSCRIBE_WAIT_S: Final = 10.0

WakeReason = Literal["notified", "poked", "timeout"]


class SyncWaiter:
    """A blocking waiter for one id (used by the sync result waits)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._event = threading.Event()
        self._notified = False

    def notify(self) -> None:
        """Called on the listener thread: the task finished."""
        self._notified = True
        self._event.set()

    def poke(self) -> None:
        """Called on the listener thread after a reconnect: re-read the row."""
        self._event.set()

    def wait(self, timeout: float) -> WakeReason:
        """Block until notified/poked or ``timeout`` seconds pass."""
        woke = self._event.wait(timeout)
        self._event.clear()
        if self._notified:
            return "notified"
        return "poked" if woke else "timeout"


class AsyncWaiter:
    """An awaitable waiter for one id, bound to the running event loop."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._notified = False

    def _set(self) -> None:
        self._event.set()

    def _wake_from_thread(self) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._set)

    def notify(self) -> None:
        """Called on the listener thread: the task finished."""
        self._notified = True
        self._wake_from_thread()

    def poke(self) -> None:
        """Called on the listener thread after a reconnect: re-read the row."""
        self._wake_from_thread()

    async def wait(self, timeout: float) -> WakeReason:
        """Wait until notified/poked or ``timeout`` seconds pass."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races with
        # the event being set, and get_result_async must always propagate cancellation.
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
            woke = True
        except TimeoutError:
            woke = False
        self._event.clear()
        if self._notified:
            return "notified"
        return "poked" if woke else "timeout"


_Waiter = SyncWaiter | AsyncWaiter


class ResultWaiters:
    """The waiters of one broker and channel, keyed by the notification payload (task or workflow
    id), fed by one subscription."""

    def __init__(
        self, get_listener: Callable[[], NotificationListener], channel: str = TASK_DONE_CHANNEL
    ) -> None:
        self._get_listener = get_listener
        self._channel = channel
        # Ownership: _waiters is written by caller threads (register/unregister) and read by the
        # listener thread (dispatch); always under _lock.
        self._lock = threading.Lock()
        self._waiters: dict[str, list[_Waiter]] = {}
        self._subscription: Subscription | None = None
        self._remove_reconnect: Callable[[], None] | None = None

    def _subscribe(self) -> Subscription:
        with self._lock:
            sub = self._subscription
            if sub is not None:
                return sub
            listener = self._get_listener()
            sub = listener.subscribe(self._channel, self._on_notify, wait_s=None)
            self._remove_reconnect = listener.add_reconnect_callback(self._on_reconnect)
            self._subscription = sub
            return sub

    def register(self, waiter: _Waiter) -> None:
        """Start routing notifications for ``waiter.key`` to ``waiter`` (LISTEN may still be
        pending; use :meth:`wait_listening` before the re-read that closes the race)."""
        self._subscribe()
        with self._lock:
            self._waiters.setdefault(waiter.key, []).append(waiter)

    def listening(self) -> bool:
        """True while LISTEN on the channel is active: a notification for a waiter registered now
        cannot be missed, so one read after registering is enough."""
        sub = self._subscription
        return sub is not None and sub.active

    def wait_listening(self) -> None:
        """Block (bounded) until LISTEN on the channel is active."""
        self._subscribe().wait_active(_SUBSCRIBE_WAIT_S)

    async def wait_listening_async(self) -> None:
        """Wait (bounded, without blocking the loop) until LISTEN on the channel is active."""
        await self._subscribe().wait_active_async(_SUBSCRIBE_WAIT_S)

    def unregister(self, waiter: _Waiter) -> None:
        """Stop routing notifications to ``waiter``."""
        with self._lock:
            waiters = self._waiters.get(waiter.key)
            if waiters is None:
                return
            with contextlib.suppress(ValueError):
                waiters.remove(waiter)
            if not waiters:
                del self._waiters[waiter.key]

    def _on_notify(self, _channel: str, payload: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(payload, ()))
        for waiter in waiters:
            waiter.notify()

    def _on_reconnect(self) -> None:
        with self._lock:
            waiters = [w for ws in self._waiters.values() for w in ws]
        for waiter in waiters:
            waiter.poke()

    def close(self) -> None:
        """Drop the subscription (the listener itself is released by the broker)."""
        with self._lock:
            sub, self._subscription = self._subscription, None
            remove, self._remove_reconnect = self._remove_reconnect, None
        if remove is not None:
            remove()
        if sub is not None:
            sub.close()
