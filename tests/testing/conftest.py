"""The testing helpers' tests use them as an app's own test suite would: the plugin enabled by its
one line, and the app pointed at each test's database by the ``horsies_app`` fixture the plugin
asks for.

pytest reads ``pytest_plugins`` only from a conftest it loads at start-up: one at the top of what
it was asked to run, or in a folder named ``test*`` right below it. This folder is such a folder
for ``pytest tests`` and ``pytest`` (testpaths), and the top for ``pytest tests/testing``.
"""

from __future__ import annotations

from collections.abc import Iterator

import orders_app
import pytest
from horsies import Horsies
from horsies.testing import use_database

pytest_plugins = ["horsies.testing.pytest_plugin"]


@pytest.fixture
def horsies_app(horsies_database_url: str) -> Iterator[Horsies]:
    """The orders app, pointed at the test's (empty) database."""
    with use_database(orders_app.app, horsies_database_url) as app:
        yield app
