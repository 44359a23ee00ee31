"""The rate and concurrency limits a worker enforces: found among its app's tasks at start-up,
their numbers written for the whole cluster, and the claimer told which queues to claim through
the limited claim (``horsies.broker.limits``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from horsies.errors import ConfigurationError, ErrorCode
from horsies.logs import get_logger
from horsies.tasks.limits import limits_by_queue

from horsies_worker.claimer import Claimer
from horsies_worker.config import WorkerConfig

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.broker import PostgresBroker

__all__ = ["enforce_limits"]

logger = get_logger("worker")


async def enforce_limits(
    app: Horsies, config: WorkerConfig, broker: PostgresBroker, claimer: Claimer
) -> None:
    """Register the limits of the app's tasks in the served queues and have ``claimer`` honour
    them.

    Raises:
        ConfigurationError: E201 when a served queue has tasks under a limit while a cluster-wide
            cap applies (those claims count under another lock; not supported together yet).
    """
    served = set(config.queue_names)
    found = {
        queue: limits
        for queue, limits in limits_by_queue(
            app.tasks.values(), lambda name: app.resolve_queue(name)[0]
        ).items()
        if queue in served
    }
    if not found:
        return
    if config.cluster_capped:
        names = sorted({limit.name for limits in found.values() for limit in limits})
        raise (
            ConfigurationError(
                "rate and concurrency limits cannot be combined with cluster-wide caps",
                code=ErrorCode.CONFIG_INVALID_CLUSTER_CAP,
            )
            .with_note(
                f"queues {', '.join(sorted(found))} have tasks under limits"
                f" ({', '.join(names)}) and this worker has cluster_wide_cap or a queue"
                " max_concurrency"
            )
            .with_help(
                "serve those queues with workers without cluster-wide caps, or express the cap as a"
                " Limit(concurrency=N) on the tasks"
            )
        )
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
