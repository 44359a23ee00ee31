"""Small pure formatting helpers shared by the screens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from horsies.broker.attempts import TaskAttempt

__all__ = [
    "ATTEMPT_COLUMNS",
    "attempt_cells",
    "bar",
    "count",
    "duration",
    "histogram",
    "moment",
    "percent",
    "since",
]


def count(n: int, cap: int, capped: bool = False) -> str:
    """A task count that stopped at ``cap`` (counts of finished tasks are bounded): ``10000+``."""
    return f"{n}+" if capped or n >= cap else str(n)


def duration(value: timedelta | float | None) -> str:
    """``3s``, ``4m05s``, ``2h03m``, ``3d04h``."""
    if value is None:
        return "-"
    seconds = int(value.total_seconds() if isinstance(value, timedelta) else value)
    seconds = max(seconds, 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def since(moment: datetime | None, now: datetime) -> str:
    return "-" if moment is None else duration(now - moment)


def moment(value: datetime | None) -> str:
    """A point in time in UTC, to the second: ``2026-05-04 13:02:09``."""
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


ATTEMPT_COLUMNS: Final = ("#", "Started (UTC)", "Ended (UTC)", "Worker", "Outcome", "Error")
"""The columns of a task's attempt history, as :func:`attempt_cells` fills them."""


def attempt_cells(attempt: TaskAttempt) -> tuple[str, ...]:
    """One attempt as a row of text: its number, when it started and ended, where it ran
    (host:pid and the worker id's first 8 characters), how it ended, and the error that ended it
    (code and message, then the worker's or reaper's reason, when there is one)."""
    where = f"{attempt.hostname or '?'}:{attempt.pid if attempt.pid is not None else '?'}"
    if attempt.worker_id:
        where += f" {attempt.worker_id[:8]}"
    error = ": ".join(p for p in (attempt.error_code, attempt.error_message) if p)
    if attempt.failed_reason and attempt.failed_reason not in error:
        error = f"{error} ({attempt.failed_reason})" if error else attempt.failed_reason
    return (
        str(attempt.attempt),
        moment(attempt.started_at),
        moment(attempt.ended_at),
        where,
        attempt.status.lower(),
        error or "-",
    )


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def bar(fraction: float, width: int = 20) -> str:
    """A text progress bar of `width` cells."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return "█" * filled + "░" * (width - filled)


def histogram(labels: Sequence[str], counts: Sequence[int], width: int = 30) -> str:
    """One line per bucket: label, bar scaled to the largest count, count."""
    top = max(counts, default=0) or 1
    pad = max((len(label) for label in labels), default=0)
    return "\n".join(
        f"{label:>{pad}} {bar(count / top, width)} {count}"
        for label, count in zip(labels, counts, strict=True)
    )
