"""A real PgBouncer, started by a test in front of the suite's PostgreSQL.

The binary is ``pgbouncer`` from the PATH (or ``/usr/sbin``, where Debian's package puts it), or
the one ``HORSIES_TEST_PGBOUNCER`` names (to try another version). Each bouncer listens on a Unix
socket in a directory of its own (no TCP port, so parallel test processes never collide), trusts
its clients, and logs in to PostgreSQL with the suite's own credentials. PgBouncer refuses to run
as root, so under root it is told to switch to the embedded server's unprivileged user.

Every wait is bounded; :meth:`Bouncer.reap` stops only the process started here.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from process_harness import LoggedProcess, child_env, wait_until
from psycopg.conninfo import conninfo_to_dict

__all__ = [
    "PGBOUNCER_ENV",
    "PREPARED_STATEMENTS_SINCE",
    "Bouncer",
    "PgBouncerBinary",
    "Pool",
    "StartBouncer",
    "find_pgbouncer",
    "pgbouncer_version",
    "start_bouncer",
]

PGBOUNCER_ENV = "HORSIES_TEST_PGBOUNCER"
PREPARED_STATEMENTS_SINCE = (1, 21)
"""The first PgBouncer that tracks protocol-level prepared statements (``max_prepared_statements``)
in transaction pooling."""

_PORT = 6432
_START_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 10.0
# Under root: the embedded server's own user when it exists, else the usual unprivileged one.
_RUN_AS_CANDIDATES = ("embedded_postgres", "nobody")


def find_pgbouncer() -> str | None:
    """The PgBouncer binary to test with, or None when none is installed."""
    named = os.environ.get(PGBOUNCER_ENV)
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("pgbouncer") or shutil.which(
        "pgbouncer", path="/usr/sbin:/usr/local/sbin:/sbin"
    )


def pgbouncer_version(binary: str) -> tuple[int, int, int]:
    """The version ``binary --version`` reports, e.g. ``(1, 18, 0)``."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=15, check=True
    )
    match = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", out.stdout + out.stderr)
    if match is None:
        raise AssertionError(f"cannot read the version of {binary}: {out.stdout!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


@dataclass(frozen=True)
class PgBouncerBinary:
    """The PgBouncer the tests start, and its version."""

    path: str
    version: tuple[int, int, int]

    @property
    def tracks_prepared_statements(self) -> bool:
        """Whether it supports ``max_prepared_statements`` (1.21 and later)."""
        return self.version >= PREPARED_STATEMENTS_SINCE

    @property
    def transaction_settings(self) -> dict[str, str]:
        """What transaction pooling is run with: the tracking of prepared statements where this
        PgBouncer has it (test_e2e_pgbouncer_prepared.py shows what happens without)."""
        return {"max_prepared_statements": "100"} if self.tracks_prepared_statements else {}

    def skip_without_tracking(self) -> None:
        """Skip a test of horsies in transaction pooling on a PgBouncer that cannot run it."""
        if not self.tracks_prepared_statements:
            pytest.skip(
                f"PgBouncer {'.'.join(map(str, self.version))} predates max_prepared_statements "
                "(1.21), without which horsies cannot run in transaction pooling"
            )


@dataclass(frozen=True)
class Pool:
    """An extra database entry of a bouncer: clients naming ``alias`` reach ``database`` with
    ``pool_mode`` (the entry ``*`` reaches every database by its own name with the bouncer's
    default mode)."""

    alias: str
    database: str
    pool_mode: str


def _run_as_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in _RUN_AS_CANDIDATES:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise AssertionError("running as root, and no unprivileged user to run PgBouncer as")


def _quote(value: str) -> str:
    # PgBouncer's connection strings take libpq's single-quoted form.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _server_params(upstream: Mapping[str, object]) -> str:
    keys = ("host", "port", "user", "password")
    return " ".join(f"{k}={_quote(str(upstream[k]))}" for k in keys if upstream.get(k))


class Bouncer(LoggedProcess):
    """One PgBouncer process started by a test; its log is the process output."""

    kind = "pgbouncer"
    ready_text = "process up"

    def __init__(self, binary: str, directory: Path, run_as: str | None, user: str) -> None:
        self.directory = directory
        self.user = user
        command = [binary, *(["-u", run_as] if run_as else []), str(directory / "pgbouncer.ini")]
        super().__init__(command, child_env({}), directory / "pgbouncer.log")

    def conninfo(self, database: str) -> str:
        """Plain libpq URL of ``database`` (or of a :class:`Pool` alias) through this bouncer."""
        host = quote(str(self.directory), safe="/")
        return f"postgresql://{quote(self.user, safe='')}@/{database}?host={host}&port={_PORT}"

    def url(self, database: str) -> str:
        """The same as a ``postgresql+psycopg://`` URL, for ``PostgresConfig``."""
        return self.conninfo(database).replace("postgresql://", "postgresql+psycopg://", 1)

    def reap(self) -> None:
        """Stop the bouncer: SIGINT (a safe shutdown in every version, where SIGTERM waits for
        the clients to leave from 1.23 on), then SIGKILL; remove its directory."""
        if self.alive:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=_STOP_TIMEOUT_S)
        super().reap()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_bouncer(
    binary: str,
    upstream_conninfo: str,
    *,
    pool_mode: str = "transaction",
    pool_size: int = 4,
    pools: tuple[Pool, ...] = (),
    settings: Mapping[str, str] | None = None,
    ready: bool = True,
) -> Bouncer:
    """Start PgBouncer in front of the server of ``upstream_conninfo`` (a libpq URL whose host,
    port, user and password it logs in with) and, with ``ready``, wait until it accepts clients.

    ``settings`` are added to its ``[pgbouncer]`` section as they are (e.g.
    ``{"max_prepared_statements": "0"}``). The caller reaps it.
    """
    upstream = conninfo_to_dict(upstream_conninfo)
    user = str(upstream.get("user") or pwd.getpwuid(os.getuid()).pw_name)
    server = _server_params(upstream)
    run_as = _run_as_user()
    # A short path: the socket's path must fit in sun_path (108 bytes).
    directory = Path(tempfile.mkdtemp(prefix="horsies-pgb-", dir="/tmp"))
    lines = ["[databases]", f"* = {server}"]
    lines += [f"{p.alias} = {server} dbname={p.database} pool_mode={p.pool_mode}" for p in pools]
    lines += [
        "[pgbouncer]",
        "listen_addr =",
        f"unix_socket_dir = {directory}",
        f"listen_port = {_PORT}",
        "auth_type = trust",
        f"auth_file = {directory / 'users.txt'}",
        f"pool_mode = {pool_mode}",
        f"default_pool_size = {pool_size}",
        "max_client_conn = 200",
        *(f"{key} = {value}" for key, value in (settings or {}).items()),
    ]
    (directory / "pgbouncer.ini").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (directory / "users.txt").write_text(f'"{user}" ""\n', encoding="utf-8")
    if run_as is not None:
        for path in (directory, *directory.iterdir()):
            shutil.chown(path, run_as)
    bouncer = Bouncer(binary, directory, run_as, user)
    if ready:
        try:
            bouncer.wait_ready(_START_TIMEOUT_S)
            wait_until(lambda: _accepts(bouncer, upstream), _START_TIMEOUT_S, "pgbouncer to accept")
        except BaseException:
            bouncer.reap()
            raise
    return bouncer


def _accepts(bouncer: Bouncer, upstream: Mapping[str, object]) -> bool:
    database = str(upstream.get("dbname") or "postgres")
    try:
        with psycopg.connect(bouncer.conninfo(database), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


StartBouncer = Callable[..., Bouncer]
"""The ``start_bouncer`` fixture: :func:`start_bouncer`'s options, in front of the test server."""
