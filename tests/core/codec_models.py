"""Importable classes for the codec tests (the codec refuses classes it could not import back)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Generic, TypeVar

from horsies.results import TaskError
from pydantic import BaseModel, field_validator


class Color(str, Enum):  # noqa: UP042 - the mixin form users write; StrEnum is covered too
    RED = "red"
    GREEN = "green"


class Level(IntEnum):
    LOW = 1
    HIGH = 2


class PlainEnum(Enum):
    A = 1


class Item(BaseModel):
    name: str
    qty: int
    price: float = 0.0
    when: dt.datetime | None = None
    tags: list[str] = []


class Order(BaseModel):
    id: int
    items: list[Item]
    color: Color = Color.RED

    class Line(BaseModel):
        """Nested class: stored under qualname "Order.Line"."""

        text: str


class Positive(BaseModel):
    value: int

    @field_validator("value")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be positive")
        return value


@dataclass
class Point:
    x: int
    y: int


@dataclass
class Shape:
    name: str
    points: list[Point] = field(default_factory=list)
    created: dt.date | None = None
    area: float = field(init=False, default=0.0)
    label: str = field(init=False)

    def __post_init__(self) -> None:
        self.label = f"shape:{self.name}"


@dataclass(frozen=True)
class Frozen:
    item: Item
    stamp: dt.time
    hidden: int = field(init=False, default=7)


@dataclass(slots=True)
class Slotted:
    a: int
    b: tuple[int, ...] = ()
    c: list[int] = field(default_factory=list)


class DetailedError(TaskError):
    """A TaskError subclass with an extra field (round-trips as itself)."""

    attempts: int = 0
    order: Order | None = None


T = TypeVar("T")


class Box(BaseModel, Generic[T]):
    value: T


class NotAModel:
    """Neither a pydantic model nor a dataclass."""
