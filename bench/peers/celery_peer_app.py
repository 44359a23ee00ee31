"""The Celery app of the Celery peer (only imported from the ``bench/.venvs/celery`` virtualenv):
one no-op task, Redis as broker (database 0) and result backend (database 1, so that the drain can
count results with DBSIZE). The socket comes from ``BENCH_CELERY_REDIS_SOCKET``, so that the worker
started with ``-A celery_peer_app`` builds the same app as the producer. Every other setting is
Celery's default."""
# pyright: reportMissingImports=false, reportUnknownMemberType=false, reportUnknownVariableType=false, reportUntypedFunctionDecorator=false

from __future__ import annotations

import os

from celery import Celery

SOCKET_ENV = "BENCH_CELERY_REDIS_SOCKET"
TASK_NAME = "bench.noop"

_socket = os.environ[SOCKET_ENV]  # set by celery_peer.py, for itself and its worker
app = Celery(
    "bench",
    broker=f"redis+socket://{_socket}",
    backend=f"redis+socket://{_socket}?virtual_host=1",
)


# A fixed name, whatever the module is imported as (the worker log shows it).
@app.task(name=TASK_NAME)
def noop() -> None:
    return None
