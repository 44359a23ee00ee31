"""Racing callers in threads, for tests that check what the database lets through at once."""

from __future__ import annotations

import threading
from collections.abc import Callable


def race(n: int, caller: Callable[[int], None], timeout_s: float) -> None:
    """Run ``caller(0)`` ... ``caller(n - 1)`` in ``n`` threads at once and wait (bounded) for all
    of them; a thread still running or one that raised fails the test (the first error is
    re-raised)."""
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            caller(index)
        except BaseException as exc:  # re-raised below: a thread's error must fail the test
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout_s)
    assert not any(thread.is_alive() for thread in threads), f"a caller ran over {timeout_s} s"
    if failures:
        raise failures[0]
