"""Hiding passwords in text the library prints, logs or stores.

Database URLs travel into error messages (a driver error quoting the URL, a configuration error, a
source line shown by an error report): every such text goes through :func:`mask_database_url`
first.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MASK", "SCHEME_RE", "credential_ends", "mask_database_url", "url_password"]

MASK: Final = "***"
SCHEME_RE: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SCHEME_ANYWHERE_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URL_END_CHARS: Final = frozenset(" \t\r\n\"'<>")
# `password=...` in key/value conninfo strings and in URL query strings.
_PASSWORD_PARAM_RE: Final = re.compile(
    r"(?P<key>\bpassword\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE
)


def credential_ends(text: str, start: int, end: int) -> tuple[int, int]:
    """Where the user-info part of the URL `text[start:end]` (after ``scheme://``) ends.

    Returns two indexes of the ``@`` closing it, -1 for none: libpq's reading (the first ``@``
    before any ``/``; ``?`` and ``#`` belong to the password) and the loose reading (the last ``@``
    before any ``?``/``#``, as if a raw ``@`` or ``/`` were part of the password). They differ when
    the user name or password holds a raw ``@`` or ``/``.
    """
    libpq_at = -1
    for index in range(start, end):
        char = text[index]
        if char == "@":
            libpq_at = index
            break
        if char == "/":
            break
    stop = end
    for marker in ("?", "#"):
        found = text.find(marker, start, end)
        if found != -1:
            stop = min(stop, found)
    return libpq_at, text.rfind("@", start, stop)


def _url_end(text: str, start: int) -> int:
    """End of a URL found inside a message: the first whitespace or quote after `start`."""
    for index in range(start, len(text)):
        if text[index] in _URL_END_CHARS:
            return index
    return len(text)


def mask_database_url(url: str) -> str:
    """Return `url` with any password replaced by ``***``; safe to log or print.

    Works on any ``scheme://user:password@host/...`` URL, also one quoted inside a message (an
    error text), whatever the password holds: everything libpq would read as the password is
    hidden, and so is a raw ``@`` or ``/`` that was meant to be part of it. Also masks
    ``password=...`` parameters, both in URL query strings and in libpq key/value connection
    strings (``host=db password=secret``).
    """
    pieces: list[str] = []
    done = 0
    for scheme in _SCHEME_ANYWHERE_RE.finditer(url):
        start = scheme.end()
        if scheme.start() < done:
            continue  # "://" inside a part already masked
        end = len(url) if scheme.start() == 0 else _url_end(url, start)
        at = max(credential_ends(url, start, end))
        if at == -1:
            continue
        user, sep, password = url[start:at].partition(":")
        if sep and password:
            pieces.append(f"{url[done:start]}{user}:{MASK}")
            done = at
    pieces.append(url[done:])
    return _PASSWORD_PARAM_RE.sub(lambda m: m.group("key") + MASK, "".join(pieces))


def url_password(url: str) -> str | None:
    """The raw password of a ``scheme://user:password@host/...`` URL, if it has one."""
    scheme = SCHEME_RE.match(url)
    if scheme is None:
        return None
    at = max(credential_ends(url, scheme.end(), len(url)))
    if at == -1:
        return None
    _, sep, password = url[scheme.end() : at].partition(":")
    return password if sep and password else None
