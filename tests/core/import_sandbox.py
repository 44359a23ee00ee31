"""Helpers for tests that write Python files into a temporary directory and import them."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def restored_imports(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``cwd`` as the working directory; ``sys.path`` and ``sys.modules`` restored on exit."""
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    monkeypatch.chdir(cwd)
    yield cwd
    sys.path[:] = saved_path
    for name in set(sys.modules) - saved_modules:
        del sys.modules[name]


def write(path: Path, source: str) -> Path:
    """Write ``source`` (dedented) to ``path``, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path
