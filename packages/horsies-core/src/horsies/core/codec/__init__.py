"""Compatibility re-exports of the JSON codec (decision D43)."""
