"""Keeping the worker's processes small: memory freed during start-up goes back to the system, and
the fork server prepares what running a task the first time builds or writes before it forks, so
that the children do not each build it, or copy the pages those writes land on.

Why the first run matters: a task's first run builds the validators of its result types, and
CPython 3.11 rewrites the bytecode of a function the first few times it runs it (specialising each
instruction) and fills caches as it goes. In a forked child, each such write copies the page it
lands on (measured: about 1 MiB per child for the bench's no-op); done once in the fork server, the
children share the result with it.
"""

from __future__ import annotations

import contextlib
import gc
import pickle
import sys
from typing import Final

from horsies.app import Horsies
from horsies.logs import get_logger
from horsies.results import TaskError, TaskResult

from horsies_worker.execution import RunFacts, execute_task, injection_params

__all__ = ["release_free_memory", "warm_up"]

logger = get_logger("worker")

_WARM_UP_TASK: Final = "horsies.warm_up"
_WARM_UP_RUNS: Final = 16
"""More than the calls after which CPython 3.11 specialises a function's bytecode (8)."""


def release_free_memory() -> None:
    """Give the memory freed during start-up back to the system (glibc only; best effort).

    Importing the app allocates and frees a lot (compiling sources without cached bytecode,
    building validators), and glibc keeps freed heap pages unless asked. Called once start-up is
    over (in the fork server before it forks, in a child that imported the app itself, in the
    main process once its children run), so a long-lived process does not carry its start-up peak.
    """
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes  # malloc_trim exists only with glibc, on Linux

            ctypes.CDLL(None).malloc_trim(0)


def _warm_up_noop() -> TaskResult[None, TaskError]:
    """The task :func:`warm_up` runs: nothing."""
    return TaskResult(ok=None)


def warm_up(app: Horsies) -> None:
    """Prepare what a child builds the first time it runs each of ``app``'s tasks (the validators
    of its result types, which parameters it wants injected), then run a no-op task of the
    library's own through the steps every task takes in a child: its run message's facts,
    decoding the arguments, the call, encoding the result, pickling the reply.

    Runs no task of the app and writes nothing anywhere: the no-op lives in a throw-away app of
    the same configuration, on the queue of one of the app's tasks. Without run facts, so no span
    is started even where the app configured tracing. Best effort: what fails is left to the
    children to do, as they would have.
    """
    try:
        for task in app.tasks.values():
            task.result_adapters()
            injection_params(task)
        queues = {task.task_queue_name for task in app.tasks.values()}
        if not queues:
            return
        warm = Horsies(app.config)
        warm.task(_WARM_UP_TASK, queue_name=min(queues, key=str))(_warm_up_noop)
        wire = ("", "", 0, 0, 0, 0, None, None)
        for _ in range(_WARM_UP_RUNS):
            RunFacts.from_wire(wire)
            result_json, ok = execute_task(warm, _WARM_UP_TASK, "[]", "{}", None)
            pickle.dumps(("result", "", result_json, ok), pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        logger.debug("warm_up_skipped: %s", exc)
