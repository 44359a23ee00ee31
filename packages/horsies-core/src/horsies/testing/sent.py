"""What a test's code sent, read back from ``horsies_tasks`` without running it: :func:`sent_tasks`
and :func:`assert_sent`."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, ParamSpec

from horsies.app import Horsies
from horsies.broker.postgres import PostgresBroker
from horsies.broker.sql import testing as testing_sql
from horsies.broker.steps import Op, Query
from horsies.codec import args_from_json, args_to_json, kwargs_from_json, kwargs_to_json
from horsies.codec.tags import CTX_KEY, META_KEY
from horsies.config import PostgresConfig
from horsies.tasks.status import TaskStatus

if TYPE_CHECKING:
    from horsies.tasks.function import TaskFunction

__all__ = ["SentTask", "assert_sent", "sent_tasks"]

P = ParamSpec("P")

_LISTED_AT_MOST: Final = 20
"""Sent tasks a failed :func:`assert_sent` lists."""
_ENGINE_KWARGS: Final = frozenset({CTX_KEY, META_KEY})
"""Keyword arguments the workflow engine stores for a node's task; the worker takes them out."""


@dataclass(frozen=True, slots=True)
class SentTask:
    """One row of ``horsies_tasks``, its arguments decoded as a worker would decode them.

    ``kwargs`` leaves out what the workflow engine adds for a workflow node's task (its context
    and meta payloads). ``sent_at`` is when the task is (or was) due: later than the send for
    ``schedule()`` and for a retry.
    """

    task_id: str
    task_name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    queue_name: str
    priority: int
    status: TaskStatus
    sent_at: datetime

    @property
    def call(self) -> str:
        """The call as Python would spell it, e.g. ``orders.add(2, b=3)``."""
        return _call_text(self.task_name, self.args, self.kwargs)

    def __str__(self) -> str:
        return f"{self.call}  [{self.status.name}, queue {self.queue_name!r}, id {self.task_id}]"


def _call_text(name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    parts = [repr(value) for value in args]
    parts += [f"{key}={value!r}" for key, value in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def _sent_op(task_name: str | None, queue_name: str | None) -> Op[list[SentTask]]:
    res = yield Query(
        testing_sql.TASK_LIST_SENT, {"task_name": task_name, "queue_name": queue_name}
    )
    sent: list[SentTask] = []
    for task_id, name, args, kwargs, queue, priority, status, sent_at in res.rows:
        decoded = kwargs_from_json(kwargs)
        sent.append(
            SentTask(
                task_id=str(task_id),
                task_name=str(name),
                args=tuple(args_from_json(args)),
                kwargs={k: v for k, v in decoded.items() if k not in _ENGINE_KWARGS},
                queue_name=str(queue),
                priority=int(priority),
                status=TaskStatus[str(status)],
                sent_at=sent_at,
            )
        )
    return sent


@contextlib.contextmanager
def _broker_of(app_or_url: Horsies | str) -> Generator[PostgresBroker]:
    if isinstance(app_or_url, Horsies):
        yield app_or_url.get_broker()
        return
    broker = PostgresBroker(PostgresConfig(database_url=app_or_url, pool_size=1, max_overflow=0))
    try:
        yield broker
    finally:
        broker.close()


def sent_tasks(
    app_or_url: Horsies | str,
    name: str | TaskFunction[..., Any] | None = None,
    queue: str | None = None,
) -> list[SentTask]:
    """Every task in the database of ``app_or_url`` (an app, or a database URL), in the order
    they were sent, whatever their status; only those of the task ``name`` (a name or the task
    function) and of the queue ``queue`` when given.

    Arguments are decoded with horsies' codec, so they come back as a worker would receive them
    (a tuple sent as a list, a pydantic model as the model).
    """
    task_name = name if isinstance(name, str) or name is None else name.task_name
    with _broker_of(app_or_url) as broker:
        return broker.execute(_sent_op(task_name, queue), action="sent_tasks")


def _bound(task: TaskFunction[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """The call's arguments by parameter, defaults filled in, so that ``add(2, 3)``, ``add(2,
    b=3)`` and ``add(a=2, b=3)`` compare equal; the call itself when it does not bind."""
    try:
        bound = inspect.signature(task.__wrapped__).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return (tuple(args), kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def assert_sent(task: TaskFunction[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> SentTask:
    """Assert that ``task`` was sent with these arguments (by ``send``, ``schedule``,
    ``send_many`` or as a workflow node) and return the first such task.

    The task's app says which database to read. Arguments compare as the function would receive
    them: by parameter (``add(2, 3)`` matches a send of ``add(a=2, b=3)``, defaults count) and
    after a trip through the codec (a tuple matches the list it is stored as). Whether the task
    ran does not matter. The failure message lists what was sent.

    Raises:
        AssertionError: no task of that name was sent with these arguments.
    """
    expected_args = tuple(args_from_json(args_to_json(args)))
    expected_kwargs = kwargs_from_json(kwargs_to_json(kwargs))
    expected = _bound(task, expected_args, expected_kwargs)
    everything = sent_tasks(task.app)
    for sent in everything:
        if sent.task_name == task.task_name and _bound(task, sent.args, sent.kwargs) == expected:
            return sent
    wanted = _call_text(task.task_name, expected_args, expected_kwargs)
    raise AssertionError(_nothing_matched(wanted, everything))


def _nothing_matched(wanted: str, everything: Sequence[SentTask]) -> str:
    if not everything:
        return f"{wanted} was not sent: nothing was sent"
    lines = [f"{wanted} was not sent; sent ({len(everything)}):"]
    lines += [f"  {sent}" for sent in everything[:_LISTED_AT_MOST]]
    if len(everything) > _LISTED_AT_MOST:
        lines.append(f"  ... and {len(everything) - _LISTED_AT_MOST} more")
    return "\n".join(lines)
