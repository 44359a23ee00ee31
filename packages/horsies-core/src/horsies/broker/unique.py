"""Unique tasks: a task is inserted only if no task holding its key is in scope; otherwise the
send answers with the task that holds it.

The database decides, so any number of producers may race on one key (the partial unique index
on ``unique_key``). One round of the protocol, each statement atomic on its own:

1. insert with ``ON CONFLICT DO NOTHING``: a returned id means the task was created;
2. on a conflict, read the holder: in scope, it is the answer;
3. out of scope, release its key (tested again under its row lock) and go back to 1.

A holder that vanishes between the steps (another producer released it) also sends the round back
to 1; each repeat means another producer made progress, so a few rounds always suffice. A holder
keeps its key after leaving its scope until a send needs it, so no status change of the worker's
hot path ever touches the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, Literal

from horsies.broker.errors import BrokerError
from horsies.broker.limits import row_tag
from horsies.broker.programs import Program, Run
from horsies.broker.sql import tasks as task_sql
from horsies.broker.sql import unique as unique_sql
from horsies.broker.steps import Op, Query

__all__ = ["UniqueClaim", "UniqueOutcome", "unique_insert_program"]

UniqueScope = Literal["pending", "active", "window"]

_ROUNDS: Final = 8
"""Rounds of the protocol before giving up (each repeat is another producer's progress)."""
_CONNECTION_ATTEMPTS: Final = 3
"""Runs of the whole insert when its connection is lost (it is safe to repeat: see below)."""


@dataclass(frozen=True, slots=True)
class UniqueClaim:
    """The key a send claims, and for how long its task holds it: while ``pending``, while
    ``active`` (not ended), or for ``window_s`` seconds after the send (``window``)."""

    key: str
    scope: UniqueScope
    window_s: float | None = None


@dataclass(frozen=True, slots=True)
class UniqueOutcome:
    """The task that answers a unique send, and whether the send created it."""

    task_id: str
    created: bool


def _params(row: Sequence[Any], claim: UniqueClaim) -> dict[str, Any]:
    columns = task_sql.TASK_COPY_COLUMNS
    params: dict[str, Any] = dict(zip(columns, row[: len(columns)], strict=True))
    tag = row_tag(row)
    params["limit_name"] = None if tag is None else tag.name
    params["limit_key"] = None if tag is None else tag.key
    sent_at = params["sent_at"]
    params["delay_s"] = None
    if isinstance(sent_at, timedelta):  # a delayed send: claimable that long after now()
        params["sent_at"], params["delay_s"] = None, sent_at.total_seconds()
    params["unique_key"] = claim.key
    params["unique_scope"] = claim.scope
    params["unique_window_s"] = claim.window_s
    return params


def unique_insert_op(row: Sequence[Any], claim: UniqueClaim) -> Op[UniqueOutcome]:
    """Insert ``row`` (``TASK_COPY_COLUMNS`` order) unless a task holding ``claim.key`` is in
    scope (see the module docstring)."""
    params = _params(row, claim)
    key = {"unique_key": claim.key}
    for _ in range(_ROUNDS):
        inserted = yield Query(unique_sql.TASK_INSERT_UNIQUE, params)
        if inserted.rows:
            return UniqueOutcome(str(inserted.rows[0][0]), created=True)
        holder = yield Query(unique_sql.TASK_UNIQUE_HOLDER, key)
        if not holder.rows:
            continue  # released meanwhile: insert again
        holder_id, in_scope = str(holder.rows[0][0]), bool(holder.rows[0][1])
        if holder_id == row[0]:
            # This very row: an earlier run whose reply was lost had inserted it.
            return UniqueOutcome(holder_id, created=True)
        if in_scope:
            return UniqueOutcome(holder_id, created=False)
        yield Query(unique_sql.TASK_UNIQUE_RELEASE, key)
    raise BrokerError(f"unique key {claim.key!r} kept changing hands; send again")


def _many_op(
    rows: Sequence[Sequence[Any]], claims: Sequence[UniqueClaim]
) -> Op[list[UniqueOutcome]]:
    outcomes: list[UniqueOutcome] = []
    for row, claim in zip(rows, claims, strict=True):
        outcomes.append((yield from unique_insert_op(row, claim)))
    return outcomes


def unique_insert_program(
    rows: Sequence[Sequence[Any]], claims: Sequence[UniqueClaim], action: str
) -> Program[list[UniqueOutcome]]:
    """Insert each row unless its key is held in scope, all in one transaction (a batch is all or
    nothing). A run whose connection is lost is repeated on a new one: a row the lost run had
    committed is then found holding its own key, and reported as created."""
    for attempt in range(1, _CONNECTION_ATTEMPTS + 1):
        try:
            outcomes: list[UniqueOutcome] = yield Run(
                _many_op(rows, claims), action, transaction=len(rows) > 1
            )
            return outcomes
        except BrokerError as exc:
            if not exc.connection_lost or attempt == _CONNECTION_ATTEMPTS:
                raise
    raise AssertionError("unreachable")
