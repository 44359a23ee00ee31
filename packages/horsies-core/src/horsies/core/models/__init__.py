"""Compatibility re-exports of the configuration models (decision D43)."""
