"""Small pure formatting helpers shared by the screens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

__all__ = ["bar", "count", "duration", "histogram", "percent", "since"]


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
