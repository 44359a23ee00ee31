"""`SycePane`: a tab's content that loads its data in a thread worker and renders snapshots."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar, cast

from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Static

from syce._nodes import syce_app
from syce.messages import Loaded, SourceFailed, SourceRecovered
from syce.source import SourceUnavailable, SyceSource

if TYPE_CHECKING:
    from syce.app import SyceApp

T = TypeVar("T")

__all__ = ["FilteredPane", "SycePane", "filter_bindings"]


class SycePane(Vertical, Generic[T]):
    """Subclasses implement `load` (blocking, runs off the UI loop) and `show` (UI thread)."""

    SEARCH_HINT = "search"

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self._loading = False
        self._started = 0
        self._shown = 0
        self.data: T | None = None
        self.loads = 0
        """Number of snapshots shown so far (tests wait on it)."""

    @property
    def syce(self) -> SyceApp:
        return syce_app(self)

    @property
    def source(self) -> SyceSource:
        return self.syce.source

    def load(self) -> T:
        raise NotImplementedError

    def show(self, data: T) -> None:
        raise NotImplementedError

    def focus_main(self) -> None:
        """Give focus to the pane's main widget (when its tab becomes active)."""

    def refresh_data(self, *, force: bool = False) -> None:
        """Start a load unless one is already running (``force`` starts one anyway)."""
        if self._loading and not force:
            return
        self._loading = True
        self._started += 1
        seq = self._started
        self.run_worker(lambda: self._load_in_thread(seq), thread=True, group=f"load-{self.id}")

    def _load_in_thread(self, seq: int) -> None:
        try:
            data = self.load()
        except SourceUnavailable as exc:
            self.post_message(SourceFailed(str(exc)))
            self._loading = False
            return
        self._loading = False
        self.post_message(SourceRecovered())
        self.post_message(Loaded(data, seq))

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


def filter_bindings(filter_keys: Mapping[str, str]) -> list[Binding]:
    """One toggle key per status, plus `a` (all) and `n` (none)."""
    return [
        *(
            Binding(key, f"toggle_status('{status}')", status.title())
            for key, status in filter_keys.items()
        ),
        Binding("a", "all_filters", "All"),
        Binding("n", "no_filters", "None"),
    ]


class FilteredPane(SycePane[T]):
    """A pane whose rows are filtered by status with toggle keys (`filter_bindings`)."""

    FILTER_KEYS: ClassVar[Mapping[str, str]] = {}
    """Key -> status."""
    FILTERS_WIDGET: ClassVar[str] = ""
    """Selector of the `Static` that shows the filters."""
    FILTERS_HINT: ClassVar[str] = ""
    """Keys listed after the filters."""

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self.filters: set[str] = set(self.FILTER_KEYS.values())

    def _show_filters(self) -> None:
        parts = [
            f"[reverse] {key} {status.title()} [/reverse]"
            if status in self.filters
            else f" {key} [dim]{status.title()}[/dim] "
            for key, status in self.FILTER_KEYS.items()
        ]
        self.query_one(self.FILTERS_WIDGET, Static).update(
            "Filters: " + " ".join(parts) + "   " + self.FILTERS_HINT
        )

    def _changed(self) -> None:
        self._show_filters()
        self.refresh_data(force=True)

    def action_toggle_status(self, status: str) -> None:
        self.filters ^= {status}
        self._changed()

    def action_all_filters(self) -> None:
        self.filters = set(self.FILTER_KEYS.values())
        self._changed()

    def action_no_filters(self) -> None:
        self.filters = set()
        self._changed()
