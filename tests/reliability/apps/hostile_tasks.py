"""Tasks of the hostile-input scenarios, added to the ledger app in default queue mode.

- ``rel.echo(key, *args, **kwargs)`` returns ``[list(args), kwargs]``: whatever was sent comes
  back through the worker's decode, the task call and the result encode.
- ``rel.blob(key, size)`` returns a string of ``size`` characters (result size limits).
- the echo task again under every name of ``HOSTILE_TASK_NAMES``.

``payload_options`` reads ``RELIABILITY_MAX_PAYLOAD_BYTES`` for the ledger app's config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from horsies.app import Horsies
from horsies.results import TaskError, TaskResult

from tests.reliability.ledger import record

HOSTILE_TASK_NAMES = (
    "'; DROP TABLE horsies_tasks; --",
    "rel.\"quoted\" 'single' `back` \\ backslash",
    "rel.$$dollar$$ %s %(id)s {0} $1 ? :name",
    "rel.🐎 ünïcødé 中文 العربية \u202e\u200b\ufeff",
    "rel.\nnew line\r\ttab",
    "rel." + "x" * 251,
    "é" * 255,
)
"""Valid but hostile task names (SQL, quotes, unicode, control characters, 255 characters): each
is an echo task, so a worker must resolve and run them by their exact name."""


def add_hostile_tasks(app: Horsies, conninfo: str) -> None:
    """Register ``rel.echo`` and ``rel.blob`` on ``app`` (its ledger lives at ``conninfo``)."""

    def echo(key: str, *args: Any, **kwargs: Any) -> TaskResult[Any, TaskError]:
        record(conninfo, key, "start")
        record(conninfo, key, "end")
        return TaskResult(ok=[list(args), kwargs])

    def blob(key: str, size: int) -> TaskResult[str, TaskError]:
        record(conninfo, key, "start")
        record(conninfo, key, "end")
        return TaskResult(ok="x" * size)

    app.task("rel.echo")(echo)
    app.task("rel.blob")(blob)
    for name in HOSTILE_TASK_NAMES:
        app.task(name)(echo)


def payload_options(env: Mapping[str, str]) -> dict[str, Any]:
    """``AppConfig`` options from ``RELIABILITY_MAX_PAYLOAD_BYTES`` (a number of bytes, or
    ``none`` for no limit; unset keeps the default)."""
    raw = env.get("RELIABILITY_MAX_PAYLOAD_BYTES")
    if raw is None:
        return {}
    return {"max_payload_bytes": None if raw.lower() == "none" else int(raw)}
