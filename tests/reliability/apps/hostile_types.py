"""Importable classes used as hostile task arguments (workers rebuild them by module and qualname).

The codec refuses classes defined in ``__main__`` or inside functions, so every model, dataclass
and enum a hostile-input test sends lives here, at module level.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum, IntEnum, StrEnum
from typing import Any, NamedTuple

from pydantic import BaseModel


class Color(StrEnum):
    """A str enum: sent as its plain value."""

    RED = "red"
    QUOTE = "'; DROP TABLE horsies_tasks; --"


class Level(IntEnum):
    """An int enum: sent as its plain value."""

    LOW = 1
    HUGE = 2**63 - 1


class Plain(Enum):
    """A plain enum: refused (it has no JSON form)."""

    A = object()


class Reading(BaseModel):
    """A pydantic model with typed fields (its data is stored as ``model_dump(mode="json")``)."""

    name: str
    value: float
    at: dt.datetime | None = None
    tags: list[str] = []
    counts: dict[str, int] = {}


@dataclass
class Box:
    """A dataclass holding any value: its field is encoded like any other argument."""

    value: Any


@dataclass(frozen=True)
class Pair:
    """A frozen dataclass with an ``init=False`` field."""

    left: Any
    right: Any
    note: str = field(init=False, default="pair")


class Coord(NamedTuple):
    """A tuple subclass: sent as a JSON array, comes back as a list."""

    x: int
    y: int
