"""The peers of ``bench/run.py``: which they are, their virtualenvs (made with uv under
``bench/.venvs``), the server each one talks to, and running each peer script.

A peer script (``bench/peers/<name>_peer.py``) runs with its own virtualenv's python as
``SCRIPT measure TARGET SIZES_JSON`` and prints one JSON line (``version``, ``figures``,
``settings``). TARGET is a conninfo of a fresh database on the bench's PostgreSQL, or for a peer
on Redis the unix socket of a ``redis-server`` started for it (``redis_server.py``). A peer that
cannot be installed, started or run becomes a skipped entry with the reason; the run goes on.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import BenchError
from redis_server import find_redis_server, running_redis

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VENVS_DIR = BENCH_DIR / ".venvs"
PEERS_DIR = BENCH_DIR / "peers"


class PeerSkipped(Exception):
    """A peer could not be installed or run; the message is the reason shown in the table."""


def _python_at_least(python: str, minor: int) -> bool:
    try:
        out = subprocess.run(
            [python, "-c", f"import sys; print(sys.version_info >= (3, {minor}))"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.stdout.strip() == "True"


def _current_python() -> str:
    return sys.executable


def _python_313() -> str:
    """A Python >= 3.13 interpreter on this machine (no download), or PeerSkipped."""
    candidates = [shutil.which(f"python3.{m}") for m in (13, 14, 15)]
    for pattern in ("~/.pyenv/versions/3.1[3-9]*/bin/python", "/usr/local/bin/python3.1[3-9]"):
        candidates += sorted(glob.glob(os.path.expanduser(pattern)))
    for candidate in candidates:
        if candidate and _python_at_least(candidate, 13):
            return candidate
    raise PeerSkipped("needs Python >= 3.13 and none was found (python3.13, pyenv)")


@dataclass(frozen=True)
class Peer:
    name: str
    label: str
    script: str
    requirements: tuple[str, ...]
    python: Callable[[], str]
    drain_cap: tuple[int, int] | None = None  # (quick, full): N for W2 when the peer is slow
    redis: bool = False
    """The peer talks to a Redis the bench starts for it (its script gets the socket path in
    place of a PostgreSQL conninfo)."""


PEERS = (
    Peer(
        "pgqueuer",
        "pgqueuer",
        "pgqueuer_peer.py",
        ("pgqueuer[asyncpg,psycopg]==1.6.0", "psycopg[binary]", "psutil>=5.9"),
        _current_python,
    ),
    Peer(
        "procrastinate",
        "procrastinate",
        "procrastinate_peer.py",
        ("procrastinate==3.10.0", "psycopg[binary]", "psutil>=5.9"),
        _current_python,
    ),
    Peer(
        "horsies-ref",
        "horsies 0.1.0a2",
        "horsies_ref_peer.py",
        ("horsies==0.1.0a2", "psycopg[binary]", "psutil>=5.9"),
        _python_313,
        drain_cap=(300, 2_000),
    ),
    Peer(
        "celery",
        "celery",
        "celery_peer.py",
        ("celery[redis]==5.7.0", "redis==8.1.0", "psutil>=5.9"),
        _current_python,
        redis=True,
    ),
)


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT_ENVIRONMENT"):
        env.pop(key, None)
    return env


def ensure_venv(peer: Peer, echo: Callable[[str], None]) -> Path:
    """The peer's virtualenv python, created with uv the first time (cached in bench/.venvs)."""
    uv = shutil.which("uv")
    if uv is None:
        raise PeerSkipped("uv is not on PATH")
    python = peer.python()
    venv = VENVS_DIR / peer.name
    marker = venv / "bench-requirements.txt"
    wanted = "\n".join([python, *peer.requirements]) + "\n"
    venv_python = venv / "bin" / "python"
    if venv_python.exists() and marker.exists() and marker.read_text() == wanted:
        return venv_python
    echo(f"  {peer.name}: creating {venv.relative_to(ROOT)} ({', '.join(peer.requirements)})")
    steps = [
        [uv, "venv", "--clear", "--no-python-downloads", "-q", "-p", python, str(venv)],
        [uv, "pip", "install", "-q", "-p", str(venv_python), *peer.requirements],
    ]
    for step in steps:
        done = subprocess.run(
            step, capture_output=True, text=True, timeout=600, check=False, env=_clean_env()
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise PeerSkipped(f"install failed: {' | '.join(tail)}")
    marker.write_text(wanted)
    return venv_python


def _redis_binary() -> str:
    binary = find_redis_server()
    if binary is None:
        raise PeerSkipped("redis-server not found (Debian: apt-get install redis-server)")
    return binary


def _start_redis(stack: ExitStack, binary: str, scratch: Path, appendfsync: str) -> str:
    """The socket of a Redis started for a peer, stopped when ``stack`` closes."""
    try:
        sock = stack.enter_context(
            running_redis(binary, scratch / "redis", appendfsync=appendfsync)
        )
    except BenchError as exc:
        raise PeerSkipped(str(exc)[:200]) from None
    return str(sock)


def _run_peer_script(command: list[str], env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """The peer script's JSON line; PeerSkipped when it fails or times out."""
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=30)
        raise PeerSkipped("timed out") from None
    except BaseException:
        proc.terminate()
        proc.wait(30)
        raise
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = [line for line in err.strip().splitlines() if line.strip()][-1:]
        raise PeerSkipped(f"exited {proc.returncode}: {' '.join(tail)[:200]}")
    return json.loads(lines[-1])


def run_peer(
    peer: Peer,
    create_database: Callable[[str], str],
    sizes: dict[str, int],
    *,
    quick: bool,
    scratch: Path,
    echo: Callable[[str], None],
    redis_appendfsync: str = "off",
) -> dict[str, Any]:
    """Install (if needed) and run one peer script with ``sizes`` (N per workload) against a
    database made with ``create_database(name)`` (a conninfo) or a Redis started here; a failure
    becomes a skipped entry."""
    try:
        with ExitStack() as stack:
            redis_binary = _redis_binary() if peer.redis else None  # before a needless install
            python = ensure_venv(peer, echo)
            if redis_binary is None:
                target = create_database(f"bench_{peer.name.replace('-', '_')}")
            else:
                target = _start_redis(stack, redis_binary, scratch, redis_appendfsync)
            peer_sizes = dict(sizes)
            if peer.drain_cap is not None:
                peer_sizes["drain"] = min(sizes["drain"], peer.drain_cap[0 if quick else 1])
            echo(f"  {peer.name}: running ({peer_sizes['drain']} tasks drained)")
            log_path = scratch / f"{peer.name}.log"
            env = {**_clean_env(), "BENCH_PEER_LOG": str(log_path), "PYTHONUNBUFFERED": "1"}
            command = [str(python), str(PEERS_DIR / peer.script), "measure", target]
            command.append(json.dumps(peer_sizes))
            result = _run_peer_script(command, env, 180 if quick else 900)
    except PeerSkipped as exc:
        echo(f"  {peer.name}: skipped: {exc}")
        return {"status": "skipped", "reason": str(exc), "figures": {}}
    figures: dict[str, float] = result["figures"]
    if "w2_cpu_s" in figures:
        figures["w2_cpu_us_per_task"] = figures["w2_cpu_s"] / peer_sizes["drain"] * 1e6
    return {"status": "ok", "sizes": peer_sizes, **result}
