"""The rate and concurrency limits a worker enforces: found among its app's tasks at start-up,
their numbers written for the whole cluster, and the claimer told which queues to claim through
the limited claim (``horsies.broker.limits``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from horsies.errors import ConfigurationError, ErrorCode, SourceLocation
from horsies.logs import get_logger
from horsies.tasks.limits import Limit, limits_by_queue

from horsies_worker.claimer import Claimer
from horsies_worker.config import WorkerConfig

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.broker import PostgresBroker

__all__ = ["enforce_limits", "served_limits"]

logger = get_logger("worker")


def served_limits(app: Horsies, config: WorkerConfig) -> dict[str, list[Limit]]:
    """The limits of the app's tasks, by the served queue their runs are claimed from.

    Raises:
        ConfigurationError: E201 when a served queue has tasks under a limit while a cluster-wide
            cap applies (those claims count under another lock; not supported together yet).
    """
    served = set(config.queue_names)

    def queue_of(name: str | None) -> str:
        return app.resolve_queue(name)[0]

    found = {
        queue: limits
        for queue, limits in limits_by_queue(app.tasks.values(), queue_of).items()
        if queue in served
    }
    if found and config.cluster_capped:
        names = sorted({limit.name for limits in found.values() for limit in limits})
        # Point at a limited task: the error is about the app, not where the worker started.
        first = next(
            task
            for task in app.tasks.values()
            if task.task_limit is not None and queue_of(task.task_queue_name) in found
        )
        queues = sorted(found)
        raise (
            ConfigurationError(
                "rate and concurrency limits cannot be combined with cluster-wide caps",
                code=ErrorCode.CONFIG_INVALID_CLUSTER_CAP,
            )
            .with_location(SourceLocation.from_function(first))
            .with_note(
                f"{'queues' if len(queues) > 1 else 'queue'} {', '.join(queues)}"
                f" {'have' if len(queues) > 1 else 'has'} tasks under limits ({', '.join(names)})"
                f" and the app sets {_caps_text(config)}"
            )
            .with_help(
                "serve those queues with workers without cluster-wide caps, or express the cap as a"
                " Limit(concurrency=N) on the tasks"
            )
        )
    return found


def _caps_text(config: WorkerConfig) -> str:
    caps: list[str] = []
    if config.cluster_wide_cap is not None:
        caps.append(f"cluster_wide_cap={config.cluster_wide_cap}")
    queues = [
        f"{q.name}={q.max_concurrency}" for q in config.queues if q.max_concurrency is not None
    ]
    if queues:
        # Said outright: a CUSTOM queue has a cap even when the app never wrote one.
        caps.append(
            f"max_concurrency {', '.join(queues)} (every CUSTOM queue has one, 5 unless set)"
        )
    return " and ".join(caps)


async def enforce_limits(
    app: Horsies, config: WorkerConfig, broker: PostgresBroker, claimer: Claimer
) -> None:
    """Register the limits of the app's tasks in the served queues and have ``claimer`` honour
    them.

    Raises:
        ConfigurationError: E201, see :func:`served_limits`.
    """
    found = served_limits(app, config)
    if not found:
        return
    numbers = {limit.name: limit.numbers for limits in found.values() for limit in limits}
    for before in await broker.register_limits_async(list(numbers.values())):
        logger.warning(
            "limit %s had other numbers (%s); this worker's are now in force: %s",
            before.name,
            before,
            numbers[before.name],
        )
    claimer.limits = {queue: [limit.name for limit in limits] for queue, limits in found.items()}
    logger.info(
        "limits enforced: %s",
        ", ".join(f"{queue}: {', '.join(claimer.limits[queue])}" for queue in sorted(found)),
    )
