"""The horsies worker."""
