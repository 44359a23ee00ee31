"""What ``horsies worker`` refuses an app for at start-up, checked without starting anything:
``horsies check`` runs :func:`check_app` through the ``horsies.checks`` entry point."""

from __future__ import annotations

from typing import TYPE_CHECKING

from horsies.errors import HorsiesError

from horsies_worker.config import WorkerConfig
from horsies_worker.limits import served_limits

if TYPE_CHECKING:
    from horsies.app import Horsies

__all__ = ["check_app"]

_CHECK_LOCATOR = "<horsies check>"
"""Stands for the locator a real start gets: nothing here starts a child that would use it."""


def check_app(app: Horsies) -> list[HorsiesError]:
    """Every problem a worker of ``app`` would refuse to start for, from the app alone (its
    queues, caps and tasks): today, limits together with cluster-wide caps (E201)."""
    config = WorkerConfig.from_app(app, locator=_CHECK_LOCATOR, processes=1)
    try:
        served_limits(app, config)
    except HorsiesError as exc:
        return [exc]
    return []
