"""examples/async_http, run as its README says: a real worker (``--processes 1
--async-concurrency 50``) fetches pages from a local HTTP server whose every reply takes 0.3 s.

Forty fetches in one child finish in a fraction of 40 times 0.3 s (they overlap), each with the
server's status; a server that is down is a retried ``ConnectError``.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from process_harness import ROOT, LoggedProcess, child_env, run_python

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

EXAMPLE = ROOT / "examples" / "async_http"
REPLY_S = 0.3
PAGES = 40


class _SlowPages(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(REPLY_S)  # the server's own latency (runs in its request thread)
        body = b"ok"
        self.send_response(200 if self.path != "/missing" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SlowPages)
    thread = threading.Thread(target=httpd.serve_forever, name="slow-pages", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def worker(database_url: str, clean_db: str, tmp_path: Path) -> Iterator[LoggedProcess]:
    del clean_db
    command = [sys.executable, "-m", "horsies", "worker", "app.py:app", "--processes", "1",
               "--async-concurrency", "50"]  # fmt: skip
    process = LoggedProcess(
        command, child_env({"DATABASE_URL": database_url}), tmp_path / "worker.log", cwd=EXAMPLE
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.reap()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_forty_slow_pages_overlap_in_one_child(
    worker: LoggedProcess, server: str, database_url: str
) -> None:
    urls = [f"{server}/page{i}" for i in range(PAGES)] + [f"{server}/missing"]
    down = f"http://127.0.0.1:{_free_port()}/"
    done = run_python(
        "send.py", *urls, env=child_env({"DATABASE_URL": database_url}), cwd=EXAMPLE, timeout=90
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    statuses = [line.split(" ")[1] for line in lines[:-1]]
    assert statuses == ["200"] * PAGES + ["404"], done.stdout
    elapsed = float(lines[-1].split(" in ")[1].removesuffix(" s"))
    # Serially they would take PAGES * REPLY_S = 12 s; side by side about one reply.
    assert elapsed < PAGES * REPLY_S / 3, elapsed

    refused = run_python(
        "send.py", down, env=child_env({"DATABASE_URL": database_url}), cwd=EXAMPLE, timeout=90
    )
    # Retried twice (1 s, then 2 s), then failed with the exception's class named.
    assert refused.stdout.splitlines()[0] == f"{down} UNHANDLED_EXCEPTION ConnectError", (
        refused.stdout + refused.stderr
    )
