"""Make one broker call fail as if its connection broke mid-statement (a fault at one point)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from horsies.broker import BrokerError, PostgresBroker


def lose_next_call(
    monkeypatch: pytest.MonkeyPatch,
    broker: PostgresBroker,
    *,
    run_first: bool,
    only: Callable[[Any], bool] = lambda op: True,
) -> list[str]:
    """Make the broker's next ``_run_sync``/``_run_async`` call whose operation passes ``only``
    fail with a lost connection: after running it (it committed, the reply was lost) or before
    (it never ran). Returns the actions of every call, in order."""
    calls: list[str] = []
    lost = BrokerError("connection to the database lost", connection_lost=True)
    real_sync, real_async = broker._run_sync, broker._run_async  # pyright: ignore[reportPrivateUsage]
    armed = [True]

    def hit(op: Any) -> bool:
        if armed[0] and only(op):
            armed[0] = False
            return True
        return False

    def run_sync(op: Any, *, action: str, **kw: Any) -> Any:
        calls.append(action)
        if hit(op):
            if run_first:
                real_sync(op, action=action, **kw)
            raise lost
        return real_sync(op, action=action, **kw)

    async def run_async(op: Any, *, action: str, **kw: Any) -> Any:
        calls.append(action)
        if hit(op):
            if run_first:
                await real_async(op, action=action, **kw)
            raise lost
        return await real_async(op, action=action, **kw)

    monkeypatch.setattr(broker, "_run_sync", run_sync)
    monkeypatch.setattr(broker, "_run_async", run_async)
    return calls
