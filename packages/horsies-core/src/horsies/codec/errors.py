"""The codec's exceptions: a value that cannot be encoded or rebuilt; a payload above the limit."""

from __future__ import annotations

__all__ = ["PayloadTooLargeError", "SerializationError"]


class SerializationError(Exception):
    """A value cannot be encoded to, or rebuilt from, horsies' JSON form."""


class PayloadTooLargeError(SerializationError):
    """Encoded task arguments or a task result are larger than `AppConfig.max_payload_bytes`.

    Attributes:
        what: what was measured (``"task arguments"``, ``"task result"``).
        size: its size in bytes, UTF-8 encoded JSON.
        limit: the configured limit in bytes.
    """

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.what = what
        self.size = size
        self.limit = limit
        super().__init__(
            f"{what}: {size:,} bytes once encoded, above the limit of {limit:,} bytes "
            "(AppConfig.max_payload_bytes); store large data elsewhere and pass a reference, "
            "or raise max_payload_bytes (None disables the limit)"
        )
