"""Compatibility path `horsies.core.models.recovery`; prefer `from horsies import ...`."""

# Each name is re-exported explicitly (`import X as X`), so type checkers see it here too.
# ruff: noqa: PLC0414
from horsies.config import RecoveryConfig as RecoveryConfig
