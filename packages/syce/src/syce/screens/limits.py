"""Tab 6, Limits: every rate and concurrency limit with its numbers and what waits on it, and the
busiest keys of the selected one."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.markup import escape
from textual.widgets import DataTable, Static

from syce._nodes import row_table, table_of
from syce.models import LimitInfo, LimitKey, LimitsData
from syce.screens.base import SycePane

__all__ = ["LimitsPane", "enforcement", "key_state"]

_COLUMNS = (
    "Limit",
    "Per key",
    "Waiting",
    "On the limit",
    "In flight",
    "Starts in window",
    "Keys waiting",
    "Enforced by",
)
_KEY_COLUMNS = ("Key", "Waiting", "In flight", "Starts in window", "State")


def enforcement(limit: LimitInfo) -> str:
    """Who enforces ``limit``: live workers, or why its tasks cannot start (markup)."""
    if not limit.registered:
        return "[red]not registered[/red]"
    if limit.workers:
        return f"{limit.workers} worker{'s' if limit.workers > 1 else ''}"
    return "[yellow]no live worker[/yellow]" if limit.waiting else "no live worker"


def key_state(limit: LimitInfo, key: LimitKey) -> str:
    """Whether a key's waiting tasks wait on the limit, and on which number (markup)."""
    if not limit.registered:
        return "[red]held: no worker registered the limit[/red]"
    if not key.held:
        return "room: waits for a worker" if key.waiting else "room"
    full: list[str] = []
    if limit.concurrency is not None and key.in_flight >= limit.concurrency:
        full.append(f"{key.in_flight}/{limit.concurrency} running")
    if limit.rate is not None and key.starts_in_window >= limit.rate:
        full.append(f"{key.starts_in_window}/{limit.rate} starts")
    return f"[yellow]held: {', '.join(full) or 'at its limit'}[/yellow]"


class LimitsPane(SycePane[LimitsData]):
    SEARCH_HINT = "search limits by name"
    TABLE = "limits-table"

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self.selected: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(
            "Rate and concurrency limits (numbers are per key). [b]On the limit[/b]: waiting"
            " tasks whose key is at its concurrency or rate; the others wait for a free worker.",
            classes="label",
        )
        yield row_table(self.TABLE, *_COLUMNS)
        yield Static(id="limit-keys-title", classes="title")
        yield row_table("limit-keys", *_KEY_COLUMNS)

    def load(self) -> LimitsData:
        return self.source.limits(self.selected, self.syce.search)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        source: object = event.data_table  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        if source is not self.main_table:
            return  # the keys table below: its cursor selects nothing
        key = event.row_key.value
        if key is not None and key != self.selected:
            self.selected = key
            self.refresh_data(force=True)

    def show(self, data: LimitsData) -> None:
        table = self.main_table
        with self.prevent(DataTable.RowHighlighted):
            table.clear()
            for limit in data.limits:
                table.add_row(
                    escape(limit.name),
                    limit.numbers,
                    str(limit.waiting),
                    str(limit.held),
                    str(limit.in_flight),
                    str(limit.starts_in_window) if limit.rate is not None else "-",
                    str(limit.keys_waiting),
                    enforcement(limit),
                    key=limit.name,
                )
            names = [limit.name for limit in data.limits]
            if data.selected in names:
                table.move_cursor(row=names.index(data.selected))
        self.selected = data.selected
        chosen = next((limit for limit in data.limits if limit.name == data.selected), None)
        title = self.query_one("#limit-keys-title", Static)
        keys = table_of(self, "#limit-keys")
        keys.clear()
        if chosen is None:
            title.update("No limits: no worker registered one and no live task names one")
            return
        title.update(
            f"Busiest keys of {escape(chosen.name)} (per key: {chosen.numbers}), "
            f"{chosen.keys_waiting} with waiting tasks"
        )
        for key in data.keys:
            keys.add_row(
                escape(key.key) if key.key else "(one key)",
                str(key.waiting),
                str(key.in_flight),
                str(key.starts_in_window) if chosen.rate is not None else "-",
                key_state(chosen, key),
                key=f"k:{key.key}",
            )
