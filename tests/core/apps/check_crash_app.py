"""`horsies check` fixture: importing the app module raises an ordinary exception."""

from __future__ import annotations

SETTINGS: dict[str, str] = {}
database_url = SETTINGS["DATABASE_URL"]
