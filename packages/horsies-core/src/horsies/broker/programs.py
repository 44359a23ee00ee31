"""Programs: what a broker call does, written once for its sync and its async callers.

A program is a generator that yields effects and receives their outcomes, like an operation
(:mod:`horsies.broker.steps`) one level up: :class:`Run` runs an operation on a pooled connection,
:class:`Offload` calls code that may block (user code), :class:`Listen` and :class:`Wait` wait for a
notification. Retries, deadlines and waits are decided in the program; the two drivers
(``driver_sync``, ``driver_async``) only carry the effects out, so they are the only code that
exists twice. An effect that fails is raised inside the program at its ``yield``, so a program
handles errors with ``try``/``except`` as ordinary code would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeAlias, TypeVar

from horsies.broker.errors import BrokerError
from horsies.broker.steps import Op, Step
from horsies.broker.waiters import WakeReason

if TYPE_CHECKING:
    from horsies.broker.waiters import ResultWaiters

__all__ = [
    "Effect",
    "Listen",
    "Offload",
    "Program",
    "Run",
    "Wait",
    "WaitPlan",
    "is_transient",
    "run",
    "wait_for",
]

T = TypeVar("T")
R = TypeVar("R")

FALLBACK_POLL_S: Final = 5.0
"""Longest wait between two re-reads while waiting for a notification."""
_RETRY_WHILE_UNREACHABLE_S: Final = 0.5
"""A wait re-reads this often while the database is unreachable."""


@dataclass(frozen=True, slots=True)
class Run(Generic[T]):
    """Run ``op`` (an operation, or one step) on a pooled connection, in a transaction when
    ``transaction``; the program receives its result. ``hot`` selects the worker's one-connection
    pool; ``deadline`` (``time.monotonic()``) bounds the wait for a connection below
    ``pool_timeout``. Driver errors arrive as ``BrokerError``."""

    op: Op[T] | Step
    action: str
    transaction: bool = False
    hot: bool = False
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class Offload(Generic[T]):
    """Call ``fn`` and receive what it returns: at once for a sync caller, in a worker thread for
    an async one, so that code that blocks (user code) never stops the event loop."""

    fn: Callable[[], T]


@dataclass(frozen=True, slots=True)
class Listen:
    """Start routing the notifications for ``key`` on ``waiters`` to this program (and wait,
    bounded, until LISTEN is active). The driver stops routing them when the program ends."""

    waiters: ResultWaiters
    key: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait until the notification the program listens for arrives, the listener reconnects, or
    ``seconds`` pass; the program receives which (``"notified"``, ``"poked"``, ``"timeout"``).
    In a program that listens for nothing it is a pause of ``seconds`` (the program receives
    None)."""

    seconds: float


Effect: TypeAlias = Run[Any] | Offload[Any] | Listen | Wait
Program: TypeAlias = Generator[Effect, Any, T]


def run(
    op: Op[T], action: str, *, transaction: bool = False, deadline: float | None = None
) -> Program[T]:
    """The program of one operation: ``yield from run(op, ...)`` gives the operation's result."""
    result: T = yield Run(op, action, transaction, deadline=deadline)
    return result


def is_transient(exc: BaseException) -> bool:
    """True for a database error that may heal by waiting: unreachable, or the connection lost."""
    return isinstance(exc, BrokerError) and (exc.unreachable or exc.connection_lost)


class WaitPlan:
    """Deadline bookkeeping of one wait: ``timeout_ms`` None or <= 0 waits forever."""

    def __init__(self, timeout_ms: int | None, now: float) -> None:
        self.timeout_ms = timeout_ms
        self.deadline = (
            now + timeout_ms / 1000 if timeout_ms is not None and timeout_ms > 0 else None
        )

    def next_wait(self, now: float) -> float | None:
        """Seconds to wait before the next re-read, or None when the deadline has passed."""
        if self.deadline is None:
            return FALLBACK_POLL_S
        remaining = self.deadline - now
        if remaining <= 0:
            return None
        return min(FALLBACK_POLL_S, remaining)


def _next_wait(plan: WaitPlan, trouble: Exception | None) -> float | None:
    """Seconds until the next re-read, None at the deadline; raises ``trouble`` (the last read's
    error) if the deadline passed while the database was out of reach."""
    wait_s = plan.next_wait(time.monotonic())
    if wait_s is None:
        if trouble is not None:
            raise trouble
        return None
    return wait_s if trouble is None else min(wait_s, _RETRY_WHILE_UNREACHABLE_S)


def wait_for(
    waiters: ResultWaiters,
    key: str,
    read_final: Callable[[], Program[R | None]],
    plan: WaitPlan,
    on_notified: Callable[[], Program[R]] | None = None,
) -> Program[R | None]:
    """``read_final()``'s first non-None value, read again after each notification for ``key`` (or
    every few seconds); None at the deadline. ``on_notified`` decides the outcome after a
    notification instead of waiting on.

    No pooled connection is held while waiting. The first read's errors propagate; once waiting, a
    read that fails because the database is unreachable or the connection was lost is retried
    until the deadline (a restart or a cut connection does not end the wait; the listener's
    reconnect wakes the waiter to read again at once), and its error is raised only if the
    deadline passes while the database is still out of reach.
    """
    if not waiters.listening():
        # Maybe no need to listen at all; once listening, the read after registering is the only
        # one needed.
        final = yield from read_final()
        if final is not None:
            return final
    yield Listen(waiters, key)
    while True:
        trouble: Exception | None = None
        try:
            final = yield from read_final()
        except Exception as exc:
            if not is_transient(exc):
                raise
            trouble, final = exc, None
        if final is not None:
            return final
        wait_s = _next_wait(plan, trouble)
        if wait_s is None:
            return None
        reason: WakeReason = yield Wait(wait_s)
        if reason == "notified" and on_notified is not None:
            try:
                return (yield from on_notified())
            except Exception as exc:
                if not is_transient(exc):
                    raise
