"""Compatibility re-exports of the configuration models (see `horsies.core`)."""
