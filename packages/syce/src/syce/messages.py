"""Messages the data workers post to the UI."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

__all__ = ["Loaded", "SourceFailed", "SourceRecovered"]


@dataclass
class Loaded(Message, bubble=False):
    """A pane's data arrived (``data`` is the pane's snapshot type from `syce.models`)."""

    data: object
    seq: int = 0
    """Order of the load that produced it: an older load finishing late is ignored."""


@dataclass
class SourceFailed(Message):
    """The database could not be reached; the app shows a banner and keeps retrying."""

    error: str


@dataclass
class SourceRecovered(Message):
    """A query succeeded again after a failure."""
