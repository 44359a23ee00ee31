"""A throw-away Redis for the Celery peer: Debian's ``redis-server`` binary, started by the bench in
its scratch directory, listening on a unix socket only (as the embedded PostgreSQL does), stopped by
its pid at the end.

Persistence is the point to state, since PostgreSQL runs durable: by default Redis keeps what a
stock ``redis-server`` keeps (RDB snapshots on its built-in save rules, no append-only file), which
is what a typical Celery-on-Redis deployment runs: a send that returns is in memory only, and a
crash loses what came after the last snapshot. ``appendfsync`` "everysec" or "always" turns the
append-only file on, so that a send is written to disk within a second, or before Redis replies.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from harness import BenchError, wait_until

SAVE_RULES = "3600 1 300 100 60 10000"
"""Redis 7's built-in snapshot rules (after 1 h if one key changed, 5 min if 100, 1 min if 10,000),
spelt out so that the run does not depend on the build's defaults."""

APPENDFSYNC_CHOICES = ("off", "everysec", "always")
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 30.0
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux


def find_redis_server() -> str | None:
    """The ``redis-server`` binary on ``PATH`` (Debian's package puts it in /usr/bin), or None."""
    return shutil.which("redis-server")


def persistence_args(appendfsync: str) -> list[str]:
    """The server's persistence options: snapshots always, the append-only file unless "off"."""
    if appendfsync not in APPENDFSYNC_CHOICES:
        raise ValueError(f"appendfsync must be one of {APPENDFSYNC_CHOICES}, not {appendfsync!r}")
    args = ["--save", SAVE_RULES]
    if appendfsync == "off":
        return [*args, "--appendonly", "no"]
    return [*args, "--appendonly", "yes", "--appendfsync", appendfsync]


def _answers_ping(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def running_redis(binary: str, directory: Path, *, appendfsync: str = "off") -> Iterator[Path]:
    """Start ``binary`` with its files in ``directory``; yield the path of its unix socket once it
    answers PING; SIGTERM (then SIGKILL) its pid on exit. BenchError if it does not come up."""
    directory.mkdir(parents=True, exist_ok=True)
    sock = directory / "redis.sock"
    if len(str(sock)) > _SOCKET_PATH_MAX:
        raise BenchError(f"socket path too long for a unix socket: {sock}")
    log = directory / "redis.log"
    command = [binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
    command += ["--dir", str(directory), "--logfile", str(log), "--daemonize", "no"]
    command += persistence_args(appendfsync)
    with (directory / "redis.out").open("w") as out:
        # Its own session, so that a Ctrl+C meant for the bench does not stop it before the peer
        # script that uses it has stopped.
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                text = "\n".join(
                    path.read_text(errors="replace")[-1000:]
                    for path in (directory / "redis.out", log)
                    if path.exists()
                )
                raise BenchError(f"redis-server exited with {proc.returncode}: {text.strip()}")
            return _answers_ping(sock)

        wait_until(ready, _START_TIMEOUT_S, "redis-server to answer PING")
        yield sock
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
