"""TaskStatus and TASK_TERMINAL_STATES: the members (REQUEUED is kept for compatibility), lower-case
values in Python, upper-case names in the database."""

from __future__ import annotations

from enum import Enum

from horsies.tasks.status import TASK_TERMINAL_STATES, TaskStatus


def test_members_and_lower_case_values() -> None:
    assert {member.name: member.value for member in TaskStatus} == {
        "PENDING": "pending",
        "CLAIMED": "claimed",
        "RUNNING": "running",
        "COMPLETED": "completed",
        "FAILED": "failed",
        "CANCELLED": "cancelled",
        "REQUEUED": "requeued",
    }


def test_is_a_plain_enum() -> None:
    assert isinstance(TaskStatus.PENDING, Enum)
    assert not isinstance(TaskStatus.PENDING, str)


def test_terminal_states() -> None:
    assert frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}) == (
        TASK_TERMINAL_STATES
    )
    assert isinstance(TASK_TERMINAL_STATES, frozenset)


def test_is_terminal_matches_terminal_states() -> None:
    for status in TaskStatus:
        assert status.is_terminal == (status in TASK_TERMINAL_STATES)
    assert not TaskStatus.REQUEUED.is_terminal
    assert not TaskStatus.PENDING.is_terminal
    assert TaskStatus.CANCELLED.is_terminal


def test_database_spelling_is_the_upper_case_name() -> None:
    assert TaskStatus.RUNNING.db_value == "RUNNING"
    for status in TaskStatus:
        assert TaskStatus[status.db_value] is status
