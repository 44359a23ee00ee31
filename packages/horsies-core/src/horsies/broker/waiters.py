"""Routing of ``task_done`` / ``workflow_done`` notifications to the waiters of one broker.

One subscription per channel on the shared listener serves every waiting ``get_result`` (or
workflow ``get``) call: the payload (a task or workflow id) is looked up in a dict, so a
notification costs O(1) however many calls are waiting. After a listener reconnect every waiter is
poked to re-read its row, because notifications sent while the connection was down are lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal, Protocol

if TYPE_CHECKING:
    from horsies.broker.listener import NotificationListener, Subscription

__all__ = ["ResultWaiters", "Waiter", "WakeReason"]

_SUBSCRIBE_WAIT_S: Final = 10.0

WakeReason = Literal["notified", "poked", "timeout"]


class Waiter(Protocol):
    """A waiter for one id, woken from the listener thread (each driver has its own kind)."""

    key: str

    def notify(self) -> None:
        """The awaited id was notified."""

    def poke(self) -> None:
        """The listener reconnected: notifications may have been lost, so read again."""


class ResultWaiters:
    """The waiters of one broker and channel, keyed by the notification payload (task or workflow
    id), fed by one subscription."""

    def __init__(self, get_listener: Callable[[], NotificationListener], channel: str) -> None:
        self._get_listener = get_listener
        self._channel = channel
        # Ownership: _waiters is written by caller threads (register/unregister) and read by the
        # listener thread (dispatch); always under _lock.
        self._lock = threading.Lock()
        self._waiters: dict[str, list[Waiter]] = {}
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

    def register(self, waiter: Waiter) -> None:
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

    def unregister(self, waiter: Waiter) -> None:
        """Stop routing notifications to ``waiter``."""
        with self._lock:
            waiters = self._waiters.get(waiter.key, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(waiter.key, None)

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
