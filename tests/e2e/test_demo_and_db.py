"""The zero-setup commands `horsies demo` and `horsies db start|url|stop`, as real subprocesses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from horsies.config import PostgresConfig

REPO = Path(__file__).resolve().parents[2]


def _horsies(
    *args: str, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "horsies", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _first_group(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not found in:\n{text}"
    return match.group(1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(240)
def test_demo_runs_end_to_end_and_leaves_nothing_running() -> None:
    completed = _horsies("demo", "--tasks", "300", "--processes", "2", timeout=220)
    output = completed.stdout
    assert completed.returncode == 0, output + completed.stderr
    assert "300/300 done" in output
    assert "error_code=UNHANDLED_EXCEPTION" in output
    assert "ZeroDivisionError: division by zero" in output
    assert "result after 1 retry: 'fetched on the second attempt'" in output
    # The workflow: one failed branch, handled by the allow_failed_deps summary (as in the demo).
    assert re.search(r"quote_NOSUCH\s+FAILED\s+err=UNHANDLED_EXCEPTION", output)
    assert re.search(r"quote_ACME\s+COMPLETED", output)
    assert re.search(
        r"summary\s+COMPLETED\s+ok='3 quotes, total \d+ cents; failed: quote_NOSUCH'", output
    )
    assert re.search(r"workflow COMPLETED in \d+ ms", output)
    assert re.search(r"executed\s+[\d,]+ tasks/s \(2 processes\)", output)
    assert re.search(r"bulk enqueue\s+[\d,]+ tasks/s", output)

    worker_pid = int(_first_group(r"worker running \(pid (\d+)\)", output))
    data_dir = Path(_first_group(r"embedded, (\S+)\)", output))
    assert not _pid_alive(worker_pid), "the demo's worker is still running"
    assert not data_dir.exists(), "the demo's PostgreSQL data directory was not removed"


@pytest.mark.timeout(180)
def test_db_start_url_stop(server_data_parent: Path) -> None:
    data_dir = server_data_parent / "db"
    started = _horsies("db", "start", "--data-dir", str(data_dir), timeout=120)
    try:
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        # A plain libpq URL: psql "$(horsies db url)" takes it as it is, and so does horsies.
        assert url.startswith("postgresql://")

        shown = _horsies("db", "url", "--data-dir", str(data_dir), timeout=30)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.strip() == url

        for conninfo in (url, PostgresConfig(database_url=url).conninfo):
            with psycopg.connect(conninfo, connect_timeout=10) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)

        # A second start reuses the running server instead of failing.
        again = _horsies("db", "start", "--data-dir", str(data_dir), timeout=60)
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == url
    finally:
        stopped = _horsies("db", "stop", "--data-dir", str(data_dir), timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == "stopped"

    after = _horsies("db", "url", "--data-dir", str(data_dir), timeout=30)
    assert after.returncode == 1
    assert "no server is running" in after.stderr
    assert (data_dir / "pgdata" / "PG_VERSION").exists(), "stop must keep the data"


def test_db_commands_are_listed_in_help() -> None:
    completed = _horsies("--help", timeout=30)
    assert completed.returncode == 0
    for command in ("check", "db", "demo", "worker"):
        assert re.search(rf"^\s+{command}\s", completed.stdout, re.MULTILINE), command
