"""Syce: a Textual terminal dashboard for monitoring a horsies cluster.

Run it with the ``syce`` command (see ``syce --help``). The pieces: `SyceSource` (read-only
queries, no Textual), `Actions` (operator actions through horsies-core), `SyceApp` (the UI).
"""

from __future__ import annotations

from syce.actions import Actions
from syce.config import resolve_config
from syce.source import SourceUnavailable, SyceSource

__all__ = ["Actions", "SourceUnavailable", "SyceSource", "resolve_config"]
