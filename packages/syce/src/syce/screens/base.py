"""`Loader`: loads a snapshot in a thread worker and shows it; `SycePane`, a tab's content built on
it; the status filters and action keys the panes share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final, Generic, TypeVar, cast

from textual.binding import Binding
from textual.containers import Vertical
from textual.dom import DOMNode
from textual.widgets import DataTable, Static

from syce._nodes import cursor_key, syce_app, table_of
from syce.messages import Loaded, SourceFailed, SourceRecovered
from syce.source import SourceUnavailable, SyceSource

if TYPE_CHECKING:
    from syce.app import SyceApp

T = TypeVar("T")

__all__ = [
    "TASK_ACTIONS",
    "WORKFLOW_ACTIONS",
    "FilteredPane",
    "Loader",
    "StatusFilter",
    "SycePane",
]

TASK_ACTIONS: Final = (
    Binding("X", "task_action('cancel')", "Cancel task"),
    Binding("R", "task_action('retry')", "Retry task"),
)
"""The keys of the actions on a task, wherever one is selected (the Tasks tab, a task's detail)."""

WORKFLOW_ACTIONS: Final = (
    Binding("P", "workflow_action('pause')", "Pause"),
    Binding("R", "workflow_action('resume')", "Resume"),
    Binding("X", "workflow_action('cancel')", "Cancel"),
)
"""The keys of the actions on a workflow (the Workflows tab, a workflow's detail)."""


class Loader(Generic[T]):
    """Something that shows a snapshot of the database: `load` (blocking) runs in a thread
    worker, `show` on the UI thread. Mixed into the tab panes (widgets) and the detail screens,
    so it is not a `DOMNode` itself: Textual's screens and widgets order their bases differently.
    """

    data: T | None = None
    loads = 0
    """Number of snapshots shown so far (tests wait on it)."""
    _loading = False
    _started = 0
    _shown = 0

    @property
    def _node(self) -> DOMNode:
        return cast(DOMNode, self)

    @property
    def syce(self) -> SyceApp:
        return syce_app(self._node)

    @property
    def source(self) -> SyceSource:
        return self.syce.source

    def load(self) -> T:
        raise NotImplementedError

    def show(self, data: T) -> None:
        raise NotImplementedError

    def refresh_data(self, *, force: bool = False) -> None:
        """Start a load unless one is already running (``force`` starts one anyway)."""
        if self._loading and not force:
            return
        self._loading = True
        self._started += 1
        seq = self._started
        self._node.run_worker(
            lambda: self._load_in_thread(seq), thread=True, group=f"load-{id(self)}"
        )

    def _load_in_thread(self, seq: int) -> None:
        try:
            data = self.load()
        except SourceUnavailable as exc:
            self._node.post_message(SourceFailed(str(exc)))
            self._loading = False
            return
        self._loading = False
        self._node.post_message(SourceRecovered())
        self._node.post_message(Loaded(data, seq))

    def on_loaded(self, message: Loaded) -> None:
        message.stop()
        if message.seq < self._shown:
            return  # a newer load (other filters, window, ...) was shown already
        self._shown = message.seq
        data = cast(T, message.data)
        if data != self.data or self.loads == 0:
            self.data = data
            self.show(data)
        self.loads += 1


class SycePane(Vertical, Loader[T]):
    """A tab's content; subclasses implement `load` and `show`. The app refreshes the visible
    pane at the tick rate."""

    SEARCH_HINT = "search"
    TABLE: ClassVar[str] = ""
    """Id of the pane's main table, which gets the focus when the tab becomes active."""

    @property
    def main_table(self) -> DataTable[str]:
        return table_of(self, f"#{self.TABLE}")

    def focus_main(self) -> None:
        """Give focus to the pane's main table (when its tab becomes active)."""
        self.main_table.focus()

    def cursor_key(self) -> str | None:
        """The key of the main table's row under the cursor (None when the table is empty)."""
        return cursor_key(self.main_table)


@dataclass(frozen=True)
class StatusFilter:
    """A pane's filter by status: one toggle key per status, plus ``a`` (all) and ``n`` (none),
    shown in a `Static`."""

    keys: Mapping[str, str]
    """Key -> status, in the order the statuses are listed."""
    widget: str
    """Selector of the `Static` that shows the filter."""
    hint: str
    """The pane's keys listed after the filter's own."""

    def bindings(self) -> list[Binding]:
        return [
            *(
                Binding(key, f"toggle_status('{status}')", status.title())
                for key, status in self.keys.items()
            ),
            Binding("a", "all_filters", "All"),
            Binding("n", "no_filters", "None"),
        ]

    def render(self, chosen: set[str]) -> str:
        parts = [
            f"[reverse] {key} {status.title()} [/reverse]"
            if status in chosen
            else f" {key} [dim]{status.title()}[/dim] "
            for key, status in self.keys.items()
        ]
        return "Filters: " + " ".join(parts) + "   a all · n none · " + self.hint


class FilteredPane(SycePane[T]):
    """A pane whose rows are filtered by status (its `FILTER`)."""

    FILTER: ClassVar[StatusFilter]

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self.filters: set[str] = set(self.FILTER.keys.values())

    @property
    def statuses(self) -> list[str]:
        """The chosen statuses, in the filter's order."""
        return [s for s in self.FILTER.keys.values() if s in self.filters]

    def on_mount(self) -> None:
        self._show_filters()

    def _show_filters(self) -> None:
        self.query_one(self.FILTER.widget, Static).update(self.FILTER.render(self.filters))

    def _changed(self) -> None:
        self._show_filters()
        self.refresh_data(force=True)

    def action_toggle_status(self, status: str) -> None:
        self.filters ^= {status}
        self._changed()

    def action_all_filters(self) -> None:
        self.filters = set(self.FILTER.keys.values())
        self._changed()

    def action_no_filters(self) -> None:
        self.filters = set()
        self._changed()
