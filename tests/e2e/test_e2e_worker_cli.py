"""``horsies worker`` command line: options (``--processes`` defaults to the CPU count) and exit
codes."""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import pytest
from apps.basic import ENV_URL
from process_harness import run_horsies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_help_lists_every_option() -> None:
    result = run_horsies("worker", "--help")
    assert result.returncode == 0
    for option in (
        "--module",
        "--processes",
        "--loglevel",
        "--max-claim-batch",
        "--max-claim-per-worker",
        "--shutdown-timeout",
        "--log-format",
        "--reload",
    ):
        assert option in result.stdout
    assert "CPU count" in " ".join(result.stdout.split())  # the default of --processes


@pytest.mark.parametrize(
    "locator",
    [
        "tests.e2e.apps.no_such_module:app",  # module not found (E208)
        "tests.e2e.apps.basic:no_such_attr",  # attribute missing
        "tests/e2e/apps/missing_file.py:app",  # file not found
        "tests.e2e.apps.basic:create_app",  # not a Horsies instance
    ],
)
def test_bad_locator_exits_1(locator: str) -> None:
    result = run_horsies("worker", locator, "--processes", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_module_option_wins_over_positional() -> None:
    result = run_horsies(
        "worker", "tests.e2e.apps.basic:app", "-m", "tests.e2e.apps.no_such_module:app"
    )
    assert result.returncode == 1
    assert "no_such_module" in result.stdout + result.stderr


def test_invalid_processes_is_a_usage_error() -> None:
    result = run_horsies("worker", "tests.e2e.apps.basic:app", "--processes", "0")
    assert result.returncode != 0
    assert "processes" in result.stderr


def test_a_database_that_does_not_exist_exits_1_at_once(database_url: str) -> None:
    """A wrong database name cannot heal by waiting: the worker says so and exits, instead of
    retrying for pool_timeout (30 s here)."""
    wrong = urlunsplit(urlsplit(database_url)._replace(path="/no_such_database"))
    started = time.monotonic()
    result = run_horsies(
        "worker", "tests.e2e.apps.basic:app", "--processes", "1", env={ENV_URL: wrong}
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "the database does not exist" in output
    assert "waiting will not help" in output
    assert elapsed < 20, elapsed  # start-up included; the old wait alone was 30 s


def test_unreachable_database_exits_1() -> None:
    result = run_horsies("worker", "tests.e2e.apps.unreachable:app", "--processes", "1")
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "secret" not in output  # the password is never printed
    assert "Traceback" not in output
