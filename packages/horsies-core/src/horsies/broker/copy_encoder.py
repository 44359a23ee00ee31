"""The binary ``COPY`` stream of a ``send_many`` batch, built from bytes computed once per batch."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from horsies.broker.ids import new_task_ids
from horsies.broker.sql import tasks as task_sql

# Binary COPY encoding (PostgreSQL's COPY BINARY file format): a header, then per row the number of
# fields (int16) and each field as its length (int32, -1 for NULL) and bytes; an int16 -1 ends it.
_COPY_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_COPY_TRAILER: Final = b"\xff\xff"
_COPY_NULL: Final = b"\xff\xff\xff\xff"
_INT16: Final = struct.Struct(">h")
_INT32: Final = struct.Struct(">i")
_INT64: Final = struct.Struct(">q")
_INT4_RANGE: Final = range(-(2**31), 2**31)
_ID_LENGTH: Final = 36
_PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)
"""Binary timestamps count microseconds from here."""
_US: Final = timedelta(microseconds=1)


def _copy_text(text: str) -> bytes:
    data = text.encode()
    return _INT32.pack(len(data)) + data


def _copy_int4(value: int) -> bytes | None:
    return (
        b"\x00\x00\x00\x04" + _INT32.pack(value)
        if type(value) is int and value in _INT4_RANGE
        else None
    )


def _copy_timestamptz(value: datetime | None) -> bytes | None:
    if value is None:
        return _COPY_NULL
    if type(value) is not datetime or value.tzinfo is None:
        return None
    return b"\x00\x00\x00\x08" + _INT64.pack((value - _PG_EPOCH) // _US)


_BATCH_CHUNK_ROWS: Final = 512
"""Rows per chunk of a batch's COPY stream: the next chunk is built while the server stores the
previous one."""


class TaskBatch:
    """New PENDING rows of one task, one per call (``send_many``), arguments encoded before any I/O.

    Everything but the ids and the encoded arguments is shared by the rows, so the COPY stream is
    built from bytes computed once per batch (:meth:`copy_chunks`), with ``sent_at`` last: the
    transaction's ``now()`` minus a microsecond per later row (claimed in call order). Ids are made
    as the stream is built and kept: an insert repeated after a lost connection sends the same ids.
    """

    __slots__ = (
        "args",
        "good_until",
        "ids",
        "kwargs",
        "max_retries",
        "priority",
        "queue_name",
        "task_name",
        "task_options",
    )

    def __init__(
        self,
        task_name: str,
        args: list[str | None],
        kwargs: list[str | None],
        *,
        queue_name: str,
        priority: int,
        good_until: datetime | None,
        max_retries: int,
        task_options: str | None,
    ) -> None:
        self.task_name = task_name
        self.ids: list[str] = []
        self.args = args
        self.kwargs = kwargs
        self.queue_name = queue_name
        self.priority = priority
        self.good_until = good_until
        self.max_retries = max_retries
        self.task_options = task_options

    def _ids_up_to(self, count: int) -> list[str]:
        ids = self.ids
        if len(ids) < count:
            ids.extend(new_task_ids(count - len(ids)))
        return ids

    def all_ids(self) -> list[str]:
        """The task ids, in call order."""
        return self._ids_up_to(len(self.args))

    def rows(self, now: datetime) -> list[tuple[Any, ...]]:
        """The rows as values, in ``TASK_BATCH_COPY_COLUMNS`` order, for a transaction clock of
        ``now``."""
        last = len(self.args) - 1
        return [
            (
                task_id,
                self.task_name,
                self.queue_name,
                self.priority,
                args,
                kwargs,
                self.good_until,
                self.max_retries,
                self.task_options,
                now - timedelta(microseconds=last - index),
            )
            for index, (task_id, args, kwargs) in enumerate(
                zip(self.all_ids(), self.args, self.kwargs, strict=True)
            )
        ]

    def copy_chunks(self, now: datetime) -> Iterator[bytes] | None:
        """The binary COPY stream for ``TASK_BATCH_COPY_IN`` (UTF-8 text), built chunk by chunk as
        it is consumed; None if a shared value has no plain binary form here (then the driver
        encodes :meth:`rows`)."""
        priority = _copy_int4(self.priority)
        max_retries = _copy_int4(self.max_retries)
        good_until = _copy_timestamptz(self.good_until)
        if priority is None or max_retries is None or good_until is None:
            return None
        options = _COPY_NULL if self.task_options is None else _copy_text(self.task_options)
        shared = _copy_text(self.task_name) + _copy_text(self.queue_name) + priority
        tail = good_until + max_retries + options + b"\x00\x00\x00\x08"
        return self._chunks((now - _PG_EPOCH) // _US, shared, tail)

    def _chunks(self, now_us: int, shared: bytes, tail: bytes) -> Iterator[bytes]:
        count = len(self.args)
        head = _INT16.pack(len(task_sql.TASK_BATCH_COPY_COLUMNS))
        id_head = head + _INT32.pack(_ID_LENGTH)  # every generated id: 36 ASCII characters
        no_arguments = shared + _COPY_NULL + _COPY_NULL + tail
        first_us = now_us - (count - 1)
        pack = _INT64.pack
        all_args, all_kwargs = self.args, self.kwargs
        if not count:
            yield _COPY_HEADER + _COPY_TRAILER
            return
        parts: list[bytes] = [_COPY_HEADER]
        for start in range(0, count, _BATCH_CHUNK_ROWS):
            end = min(count, start + _BATCH_CHUNK_ROWS)
            ids = self._ids_up_to(end)
            append = parts.append
            for index in range(start, end):
                task_id = ids[index]
                if len(task_id) == _ID_LENGTH:
                    append(id_head)
                    append(task_id.encode())
                else:
                    append(head)
                    append(_copy_text(task_id))
                args, kwargs = all_args[index], all_kwargs[index]
                if args is None and kwargs is None:
                    append(no_arguments)
                else:
                    append(shared)
                    append(_COPY_NULL if args is None else _copy_text(args))
                    append(_COPY_NULL if kwargs is None else _copy_text(kwargs))
                    append(tail)
                append(pack(first_us + index))
            if end == count:
                parts.append(_COPY_TRAILER)
            yield b"".join(parts)
            parts = []
