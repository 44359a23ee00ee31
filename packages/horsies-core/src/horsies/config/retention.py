"""`RetentionConfig`: how long finished work, heartbeats and worker snapshots are kept before the
workers' maintenance removes them (docs/production.md)."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field

from horsies.config.model import ConfigModel

__all__ = ["DAY_S", "RetentionConfig"]

DAY_S: Final = 86_400.0
_MIN_KEEP_S: Final = 60.0
"""Shorter periods would race a handle that reads its result right after the task finished."""

_HEARTBEAT_MIN_S: Final = 3 * 3_600.0
"""Above the longest stale threshold the reaper accepts (2 hours): no beat it needs goes."""

Keep = Annotated[float, Field(ge=_MIN_KEEP_S, allow_inf_nan=False)] | None
"""Seconds a row is kept after it finished (at least 60), or None to keep it forever."""


class RetentionConfig(ConfigModel):
    """How long rows are kept, in seconds after they finished (None: forever).

    `finished_tasks_s` is for tasks that ended (COMPLETED, FAILED or CANCELLED) outside a workflow,
    with overrides per queue (`queues`) and per task name (`tasks`, which win over `queues`).
    `workflows_s` is for workflows that ended: the workflow, its nodes, the tasks of its nodes and
    its child workflows go together, never before the whole tree has ended. `heartbeats_s` and
    `worker_states_s` are for the workers' liveness rows and snapshots. Every worker's maintenance
    prunes (one at a time cluster-wide) in batches of `batch_size` rows, each its own short
    transaction, for at most `max_pass_s` seconds every `interval_s` seconds.
    """

    finished_tasks_s: Keep = 30 * DAY_S
    queues: dict[str, Keep] = Field(default_factory=dict[str, Keep])
    tasks: dict[str, Keep] = Field(default_factory=dict[str, Keep])
    workflows_s: Keep = 30 * DAY_S
    heartbeats_s: Annotated[float, Field(ge=_HEARTBEAT_MIN_S, allow_inf_nan=False)] | None = DAY_S
    worker_states_s: Annotated[float, Field(ge=3_600.0, allow_inf_nan=False)] | None = 7 * DAY_S
    batch_size: int = Field(default=2_000, ge=10, le=100_000)
    interval_s: float = Field(default=60.0, ge=1.0, le=86_400.0, allow_inf_nan=False)
    max_pass_s: float = Field(default=2.0, gt=0, le=3_600.0, allow_inf_nan=False)
