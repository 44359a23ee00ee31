"""Typed helpers around Textual's untyped-generic accessors (``node.app``, ``DataTable``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from textual.dom import DOMNode
from textual.widgets import DataTable

if TYPE_CHECKING:
    from syce.app import SyceApp

__all__ = ["syce_app", "table_of"]


def syce_app(node: DOMNode) -> SyceApp:
    """The running `SyceApp` of `node`."""
    app: Any = node.app  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    return cast("SyceApp", app)


def table_of(node: DOMNode, selector: str) -> DataTable[str]:
    """The `DataTable` matching `selector` under `node`."""
    return cast("DataTable[str]", node.query_one(selector, DataTable))
