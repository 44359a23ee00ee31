"""Typed helpers around Textual's untyped-generic accessors (``node.app``, ``DataTable``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from textual.dom import DOMNode
from textual.widgets import DataTable

if TYPE_CHECKING:
    from syce.app import SyceApp

__all__ = ["cursor_key", "row_table", "syce_app", "table_of"]


def syce_app(node: DOMNode) -> SyceApp:
    """The running `SyceApp` of `node`."""
    app: Any = node.app  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    return cast("SyceApp", app)


def table_of(node: DOMNode, selector: str) -> DataTable[str]:
    """The `DataTable` matching `selector` under `node`."""
    return cast("DataTable[str]", node.query_one(selector, DataTable))


def row_table(id: str, *columns: str) -> DataTable[str]:
    """A new `DataTable` whose cursor selects whole rows, with these column labels."""
    table: DataTable[str] = DataTable(id=id, cursor_type="row")
    table.add_columns(*columns)
    return table


def cursor_key(table: DataTable[str]) -> str | None:
    """The key of the row under `table`'s cursor (None when the table is empty)."""
    if table.row_count == 0:
        return None
    return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
