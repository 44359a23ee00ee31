"""Compatibility re-exports of the JSON codec (see `horsies.core`)."""
