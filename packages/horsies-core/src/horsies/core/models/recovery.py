"""Compatibility path `horsies.core.models.recovery`; prefer `from horsies import ...`."""

from __future__ import annotations

from horsies.config import RecoveryConfig

__all__ = ["RecoveryConfig"]
