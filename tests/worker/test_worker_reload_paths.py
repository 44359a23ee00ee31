"""What ``horsies worker --reload`` watches: the current directory and the app module's directory,
one left out when it lies inside the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import horsies_worker
from horsies.locator import AppLocation
from horsies_worker.reload import watched_directories


def location(locator: str) -> AppLocation:
    return AppLocation(app=cast(Any, None), canonical_locator=locator, sys_path_roots=())


def test_an_app_file_inside_the_current_directory_adds_nothing(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    app = location(f"{tmp_path / 'pkg' / 'app.py'}:app")
    assert watched_directories(app, tmp_path) == [tmp_path.resolve()]


def test_an_app_file_elsewhere_is_watched_too(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    app = location(f"{there / 'app.py'}:app")
    assert watched_directories(app, here) == [here.resolve(), there.resolve()]


def test_a_current_directory_inside_the_app_directory_gives_way(tmp_path: Path) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    app = location(f"{tmp_path / 'app.py'}:app")
    assert watched_directories(app, inner) == [tmp_path.resolve()]


def test_a_dotted_module_is_found_by_its_file(tmp_path: Path) -> None:
    app = location("horsies_worker.reload:ReloadSupervisor")
    package = Path(str(horsies_worker.__file__)).resolve().parent
    assert watched_directories(app, tmp_path) == [tmp_path.resolve(), package]
