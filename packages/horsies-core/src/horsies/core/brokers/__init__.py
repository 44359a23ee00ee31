"""Compatibility re-exports of the broker (decision D43)."""
