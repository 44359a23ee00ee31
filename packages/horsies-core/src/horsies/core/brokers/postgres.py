"""Compatibility path `horsies.core.brokers.postgres` (see `horsies.core`): `PostgresBroker`."""

# Each name is re-exported explicitly (`import X as X`), so type checkers see it here too.
# ruff: noqa: PLC0414
from horsies.broker import PostgresBroker as PostgresBroker
