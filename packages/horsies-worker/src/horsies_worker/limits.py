"""The rate and concurrency limits a worker enforces: found among its app's tasks at start-up,
their numbers written for the whole cluster, and the claimer told which queues to claim through
the limited claim (``horsies.broker.limits``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    """The limits of the app's tasks, by the served queue their runs are claimed from."""
    served = set(config.queue_names)
    return {
        queue: limits
        for queue, limits in limits_by_queue(
            app.tasks.values(), lambda name: app.resolve_queue(name)[0]
        ).items()
        if queue in served
    }


async def enforce_limits(
    app: Horsies, config: WorkerConfig, broker: PostgresBroker, claimer: Claimer
) -> None:
    """Register the limits of the app's tasks in the served queues and have ``claimer`` honour
    them."""
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
