"""Make one broker call fail as if its connection broke mid-statement (a fault at one point)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from horsies.broker import BrokerError, PostgresBroker
from horsies.broker.programs import Run


def lose_next_call(
    monkeypatch: pytest.MonkeyPatch,
    broker: PostgresBroker,
    *,
    run_first: bool,
    only: Callable[[Any], bool] = lambda op: True,
) -> list[str]:
    """Make the broker's next statement run (by its sync or async driver) whose operation passes
    ``only`` fail with a lost connection: after running it (it committed, the reply was lost) or
    before (it never ran). Returns the actions of every run, in order."""
    calls: list[str] = []
    lost = BrokerError("connection to the database lost", connection_lost=True)
    sync, asynchronous = broker._sync, broker._async  # pyright: ignore[reportPrivateUsage]
    real_sync, real_async = sync.run, asynchronous.run
    armed = [True]

    def hit(effect: Run[Any]) -> bool:
        if armed[0] and only(effect.op):
            armed[0] = False
            return True
        return False

    def run_sync(effect: Run[Any], **kw: Any) -> Any:
        if kw.get("bootstrap"):
            return real_sync(effect, **kw)  # the migrations, not a call of the broker's API
        calls.append(effect.action)
        if hit(effect):
            if run_first:
                real_sync(effect, **kw)
            raise lost
        return real_sync(effect, **kw)

    async def run_async(effect: Run[Any], **kw: Any) -> Any:
        if kw.get("bootstrap"):
            return await real_async(effect, **kw)
        calls.append(effect.action)
        if hit(effect):
            if run_first:
                await real_async(effect, **kw)
            raise lost
        return await real_async(effect, **kw)

    monkeypatch.setattr(sync, "run", run_sync)
    monkeypatch.setattr(asynchronous, "run", run_async)
    return calls
