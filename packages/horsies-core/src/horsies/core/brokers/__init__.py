"""Compatibility re-exports of the broker (see `horsies.core`)."""
