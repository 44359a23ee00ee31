"""Tasks that fork and then die, added to the ledger app in default queue mode.

``rel.fork_and_die(key, how, pid_file)`` records its start, starts a long-lived descendant, writes
that descendant's pid to ``pid_file`` (so the test can end it), then dies at once with
``os._exit(3)`` (as code that crashes hard would). ``how``:

- ``"fork"``: ``os.fork()``; the grandchild sleeps for a minute;
- ``"pool"``: a ``multiprocessing`` pool with the ``fork`` start method, one worker sleeping in a
  task (what ``multiprocessing.Pool()`` does by default on Linux before Python 3.14).

Either descendant inherits whatever descriptors the child had open when it forked.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from horsies.app import Horsies
from horsies.results import TaskError, TaskResult

from tests.reliability.ledger import record

_DESCENDANT_LIFETIME_S = 60.0


def _linger() -> int:
    time.sleep(_DESCENDANT_LIFETIME_S)
    return os.getpid()


def add_forking_tasks(app: Horsies, conninfo: str) -> None:
    """Register ``rel.fork_and_die`` on ``app`` (its ledger lives at ``conninfo``)."""

    def fork_and_die(key: str, how: str, pid_file: str) -> TaskResult[None, TaskError]:
        record(conninfo, key, "start")
        if how == "fork":
            pid = os.fork()
            if pid == 0:
                time.sleep(_DESCENDANT_LIFETIME_S)
                os._exit(0)
        else:
            pool = multiprocessing.get_context("fork").Pool(1)
            pool.apply_async(_linger)
            [process] = pool._pool  # pyright: ignore[reportAttributeAccessIssue, reportUnknownVariableType, reportUnknownMemberType]
            pid = int(process.pid)  # pyright: ignore[reportUnknownArgumentType, reportUnknownMemberType]
        Path(pid_file).write_text(str(pid))
        os._exit(3)

    app.task("rel.fork_and_die")(fork_and_die)
