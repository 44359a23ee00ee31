"""The bench's Redis for the Celery peer: started in a directory of its own, answering on its unix
socket, stopped at the end; and without ``redis-server`` the Celery peer is skipped with a note,
before anything is installed, never failing the run."""

from __future__ import annotations

import importlib
import socket
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.timeout(60)

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def _bench_module(name: str) -> ModuleType:
    # bench/ is a folder of scripts that import each other by name, not a package.
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module(name)


def _ping(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(b"PING\r\n")
        return sock.recv(16)


def test_redis_answers_on_its_socket_and_is_stopped(tmp_path: Path) -> None:
    redis_server = _bench_module("redis_server")
    binary = redis_server.find_redis_server()
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    directory = tmp_path / "redis"
    with redis_server.running_redis(binary, directory, appendfsync="everysec") as sock:
        assert _ping(sock) == b"+PONG\r\n"
        assert (directory / "appendonlydir").is_dir()  # the append-only file is on
    with pytest.raises(OSError):
        _ping(sock)
    assert "ready to exit" in (directory / "redis.log").read_text()


def test_persistence_defaults_to_snapshots_only() -> None:
    redis_server = _bench_module("redis_server")
    args = redis_server.persistence_args("off")
    assert args[args.index("--appendonly") + 1] == "no"
    assert "--save" in args
    with pytest.raises(ValueError, match="appendfsync"):
        redis_server.persistence_args("sometimes")


def test_celery_is_skipped_without_redis_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    peer_runner = _bench_module("peer_runner")
    (celery,) = [peer for peer in peer_runner.PEERS if peer.name == "celery"]
    monkeypatch.setattr(peer_runner, "find_redis_server", lambda: None)

    def refuse(*args: object) -> str:
        raise AssertionError("a peer that cannot run got a virtualenv or a database")

    monkeypatch.setattr(peer_runner, "ensure_venv", refuse)
    lines: list[str] = []
    entry = peer_runner.run_peer(
        celery, refuse, {"drain": 10}, quick=True, scratch=tmp_path, echo=lines.append
    )
    assert entry["status"] == "skipped"
    assert "redis-server not found" in entry["reason"]
    assert entry["figures"] == {}
    assert lines == [f"  celery: skipped: {entry['reason']}"]
