"""Task ids: RFC 9562 version 7 UUID strings, in the order they were made across milliseconds,
with the time they were made in their first 48 bits and 74 random bits after it."""

from __future__ import annotations

import time
import uuid

import pytest
from horsies.broker.ids import new_task_id, new_task_ids

pytestmark = pytest.mark.timeout(30)


def _next_millisecond(after_ns: int) -> None:
    """Return once the clock's millisecond is past that of ``after_ns`` (bounded)."""
    deadline = time.monotonic() + 1.0
    while time.time_ns() // 1_000_000 <= after_ns // 1_000_000:
        assert time.monotonic() < deadline, "the clock did not move for a second"


def test_an_id_is_a_version_7_uuid_string_stamped_with_the_time_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    made = [new_task_id(), *new_task_ids(3)]
    after = time.time_ns() // 1_000_000
    for task_id in made:
        parsed = uuid.UUID(task_id)
        assert str(parsed) == task_id
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert before <= parsed.int >> 80 <= after


def test_ids_made_in_later_milliseconds_sort_after_earlier_ones() -> None:
    """What keeps new tasks at the right edge of the primary key (in text order, as PostgreSQL's
    C collation and any other compares hex digits and dashes)."""
    made: list[str] = []
    for _ in range(5):
        made += [new_task_id(), *new_task_ids(2)]
        _next_millisecond(time.time_ns())
    stamps = [task_id[:13] for task_id in made]
    assert stamps == sorted(stamps)
    # At least the five rounds' milliseconds (one may turn between the two calls of a round).
    assert len(set(stamps)) >= 5


def test_ids_of_one_millisecond_differ_in_their_random_bits() -> None:
    ids = new_task_ids(20_000)
    assert len(set(ids)) == 20_000
    assert len({task_id[15:] for task_id in ids}) == 20_000
