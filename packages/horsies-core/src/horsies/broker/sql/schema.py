"""Schema migrations (applied in order by ``horsies.broker.migrations``) and the version-table
statements.

Each migration is ``(version, description, sql)``; the SQL of one migration runs in one transaction
under the schema advisory lock, so it may hold several statements. Migrations are append-only: never
edit a released one, add a new version instead, and never DROP user data.

Table and column names are kept from the original horsies schema (documented in docs/schema.md), so
user SQL and the docs' maintenance queries keep working.
Indexes are chosen for the hot paths and kept small with partial predicates, because every status
transition rewrites every index of ``horsies_tasks``:

- ``ix_horsies_tasks_claim``: the claim scan (queue, priority, FIFO) over PENDING/CLAIMED rows only
  (since migration 10 its second column, ``limit_name IS NULL``, keeps tasks under a limit out of
  ordinary claims: ``broker/sql/limits.py``);
- ``ix_horsies_tasks_in_flight``: CLAIMED/RUNNING rows (cluster caps, per-worker counts, the
  reaper);
- ``ix_horsies_tasks_good_until`` / ``_next_retry_at`` / ``_claim_expires_at``: partial on NOT NULL,
  so they cost nothing for tasks that do not use the feature.

NOTIFY (channels in docs/schema.md): a statement-level INSERT trigger sends one ``task_new`` and one
``task_queue_<q>`` notification per queue and statement (payload: a task id of that queue), so a
bulk insert of 10 000 rows does not flood every listener; a row-level UPDATE trigger, filtered by a
WHEN clause so that claim/start updates never enter PL/pgSQL, sends ``task_done`` with the task id
when a task becomes COMPLETED/FAILED, or CANCELLED from RUNNING (a stopped run; migration 8).
"""

from __future__ import annotations

from typing import Final, LiteralString, NamedTuple

from horsies.broker.sql import fragments
from horsies.broker.sql.attempts import V12_ATTEMPTS as _V12_ATTEMPTS
from horsies.broker.sql.limit_claim import V14_LIMIT_START_NUMBERS as _V14_LIMIT_START_NUMBERS
from horsies.broker.sql.limit_claim import V17_LIMIT_CLAIM_READY as _V17_LIMIT_CLAIM_READY
from horsies.broker.sql.limits import V10_LIMITS as _V10_LIMITS
from horsies.broker.sql.ready import V16_READY as _V16_READY
from horsies.broker.sql.retention import V11_RETENTION as _V11_RETENTION

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION_CREATE",
    "SCHEMA_VERSION_EXISTS",
    "SCHEMA_VERSION_INSERT",
    "SCHEMA_VERSION_LOCK",
    "SCHEMA_VERSION_SELECT",
    "Migration",
]


class Migration(NamedTuple):
    """One schema step: applied once, in version order, recorded in ``horsies_schema_version``."""

    version: int
    description: str
    sql: LiteralString


_V1_TASKS: Final = """
CREATE TABLE IF NOT EXISTS horsies_tasks (
    id                   VARCHAR(36)  PRIMARY KEY,
    task_name            VARCHAR(255) NOT NULL,
    queue_name           VARCHAR(100) NOT NULL,
    priority             INTEGER      NOT NULL DEFAULT 100,
    args                 TEXT,
    kwargs               TEXT,
    status               VARCHAR(9)   NOT NULL DEFAULT 'PENDING',
    sent_at              TIMESTAMPTZ,
    claimed_at           TIMESTAMPTZ,
    started_at           TIMESTAMPTZ,
    completed_at         TIMESTAMPTZ,
    failed_at            TIMESTAMPTZ,
    result               TEXT,
    failed_reason        TEXT,
    claimed              BOOLEAN      NOT NULL DEFAULT false,
    claimed_by_worker_id VARCHAR(255),
    claim_expires_at     TIMESTAMPTZ,
    good_until           TIMESTAMPTZ,
    retry_count          INTEGER      NOT NULL DEFAULT 0,
    max_retries          INTEGER      NOT NULL DEFAULT 0,
    next_retry_at        TIMESTAMPTZ,
    task_options         TEXT,
    worker_pid           INTEGER,
    worker_hostname      VARCHAR(255),
    worker_process_name  VARCHAR(255),
    created_at           TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT ck_horsies_tasks_status CHECK (
        status IN ('PENDING', 'CLAIMED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED',
        'REQUEUED')),
    CONSTRAINT ck_horsies_tasks_priority CHECK (priority BETWEEN 1 AND 100),
    CONSTRAINT ck_horsies_tasks_retries CHECK (retry_count >= 0 AND max_retries >= 0),
    CONSTRAINT ck_horsies_tasks_claimed_has_owner CHECK (
        status <> 'CLAIMED' OR (claimed_at IS NOT NULL AND claimed_by_worker_id IS NOT NULL)),
    CONSTRAINT ck_horsies_tasks_running_has_start CHECK (
        status <> 'RUNNING' OR started_at IS NOT NULL),
    CONSTRAINT ck_horsies_tasks_completed_has_time CHECK (
        status <> 'COMPLETED' OR completed_at IS NOT NULL),
    CONSTRAINT ck_horsies_tasks_failed_has_time CHECK (
        status <> 'FAILED' OR failed_at IS NOT NULL)
);

CREATE INDEX IF NOT EXISTS ix_horsies_tasks_claim
    ON horsies_tasks (queue_name, priority, sent_at, id)
    WHERE status IN ('PENDING', 'CLAIMED');
CREATE INDEX IF NOT EXISTS ix_horsies_tasks_in_flight
    ON horsies_tasks (status, queue_name, claimed_by_worker_id)
    WHERE status IN ('CLAIMED', 'RUNNING');
CREATE INDEX IF NOT EXISTS ix_horsies_tasks_good_until
    ON horsies_tasks (good_until) WHERE good_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_horsies_tasks_next_retry_at
    ON horsies_tasks (next_retry_at) WHERE next_retry_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_horsies_tasks_claim_expires_at
    ON horsies_tasks (claim_expires_at) WHERE claim_expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS horsies_heartbeats (
    id        BIGSERIAL    PRIMARY KEY,
    task_id   VARCHAR(36)  NOT NULL,
    sender_id VARCHAR(255) NOT NULL,
    role      VARCHAR(20)  NOT NULL,
    sent_at   TIMESTAMPTZ  NOT NULL DEFAULT now(),
    hostname  VARCHAR(255),
    pid       INTEGER,
    CONSTRAINT ck_horsies_heartbeats_role CHECK (role IN ('claimer', 'runner'))
);
CREATE INDEX IF NOT EXISTS ix_horsies_heartbeats_task_role_sent
    ON horsies_heartbeats (task_id, role, sent_at DESC);

CREATE TABLE IF NOT EXISTS horsies_worker_states (
    id                    BIGSERIAL    PRIMARY KEY,
    worker_id             VARCHAR(255) NOT NULL,
    snapshot_at           TIMESTAMPTZ  NOT NULL DEFAULT now(),
    hostname              VARCHAR(255) NOT NULL,
    pid                   INTEGER      NOT NULL,
    processes             INTEGER      NOT NULL,
    max_claim_batch       INTEGER      NOT NULL,
    max_claim_per_worker  INTEGER      NOT NULL,
    cluster_wide_cap      INTEGER,
    queues                VARCHAR[]    NOT NULL,
    queue_priorities      JSONB,
    queue_max_concurrency JSONB,
    recovery_config       JSONB,
    tasks_running         INTEGER      NOT NULL,
    tasks_claimed         INTEGER      NOT NULL,
    memory_usage_mb       DOUBLE PRECISION,
    memory_percent        DOUBLE PRECISION,
    cpu_percent           DOUBLE PRECISION,
    worker_started_at     TIMESTAMPTZ  NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_horsies_worker_states_worker_snapshot
    ON horsies_worker_states (worker_id, snapshot_at DESC);
CREATE INDEX IF NOT EXISTS ix_horsies_worker_states_snapshot_at
    ON horsies_worker_states (snapshot_at);

CREATE TABLE IF NOT EXISTS horsies_schedule_state (
    schedule_name VARCHAR(255) PRIMARY KEY,
    last_run_at   TIMESTAMPTZ,
    next_run_at   TIMESTAMPTZ,
    last_task_id  VARCHAR(36),
    run_count     INTEGER     NOT NULL DEFAULT 0,
    config_hash   VARCHAR(64),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ix_horsies_schedule_state_next_run_at
    ON horsies_schedule_state (next_run_at);
"""

_V1_WORKFLOWS: Final = """
CREATE TABLE IF NOT EXISTS horsies_workflows (
    id                    VARCHAR(36)  PRIMARY KEY,
    name                  VARCHAR(255) NOT NULL,
    status                VARCHAR(50)  NOT NULL,
    on_error              VARCHAR(50)  NOT NULL,
    output_task_index     INTEGER,
    success_policy        JSONB,
    result                TEXT,
    error                 TEXT,
    workflow_def_module   VARCHAR(512),
    workflow_def_qualname VARCHAR(512),
    parent_workflow_id    VARCHAR(36) REFERENCES horsies_workflows (id) ON DELETE CASCADE,
    parent_task_index     INTEGER,
    depth                 INTEGER      NOT NULL DEFAULT 0,
    root_workflow_id      VARCHAR(36),
    created_at            TIMESTAMPTZ  NOT NULL DEFAULT now(),
    started_at            TIMESTAMPTZ,
    completed_at          TIMESTAMPTZ,
    updated_at            TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ix_horsies_workflows_status ON horsies_workflows (status);
CREATE INDEX IF NOT EXISTS ix_horsies_workflows_parent_workflow_id
    ON horsies_workflows (parent_workflow_id);
CREATE INDEX IF NOT EXISTS ix_horsies_workflows_root_workflow_id
    ON horsies_workflows (root_workflow_id);
CREATE INDEX IF NOT EXISTS ix_horsies_workflows_updated_at ON horsies_workflows (updated_at);

CREATE TABLE IF NOT EXISTS horsies_workflow_tasks (
    id                      VARCHAR(36)  PRIMARY KEY,
    workflow_id             VARCHAR(36)  NOT NULL
                            REFERENCES horsies_workflows (id) ON DELETE CASCADE,
    task_index              INTEGER      NOT NULL,
    node_id                 VARCHAR(128),
    task_name               VARCHAR(255) NOT NULL,
    task_args               TEXT,
    task_kwargs             TEXT,
    queue_name              VARCHAR(100) NOT NULL DEFAULT 'default',
    priority                INTEGER      NOT NULL DEFAULT 100,
    dependencies            INTEGER[]    NOT NULL DEFAULT '{}',
    args_from               JSONB,
    workflow_ctx_from       VARCHAR(128)[],
    allow_failed_deps       BOOLEAN      NOT NULL DEFAULT false,
    join_type               VARCHAR(10)  NOT NULL DEFAULT 'all',
    min_success             INTEGER,
    task_options            TEXT,
    status                  VARCHAR(50)  NOT NULL,
    task_id                 VARCHAR(36),
    is_subworkflow          BOOLEAN      NOT NULL DEFAULT false,
    sub_workflow_id         VARCHAR(36) REFERENCES horsies_workflows (id) ON DELETE SET NULL,
    sub_workflow_name       VARCHAR(255),
    sub_workflow_module     VARCHAR(512),
    sub_workflow_qualname   VARCHAR(512),
    sub_workflow_retry_mode VARCHAR(50),
    sub_workflow_summary    TEXT,
    result                  TEXT,
    error                   TEXT,
    created_at              TIMESTAMPTZ  NOT NULL DEFAULT now(),
    started_at              TIMESTAMPTZ,
    completed_at            TIMESTAMPTZ,
    CONSTRAINT uq_horsies_workflow_task_index UNIQUE (workflow_id, task_index)
);
CREATE INDEX IF NOT EXISTS ix_horsies_workflow_tasks_workflow_id
    ON horsies_workflow_tasks (workflow_id);
CREATE INDEX IF NOT EXISTS ix_horsies_workflow_tasks_node_id ON horsies_workflow_tasks (node_id);
CREATE INDEX IF NOT EXISTS ix_horsies_workflow_tasks_status ON horsies_workflow_tasks (status);
CREATE INDEX IF NOT EXISTS ix_horsies_workflow_tasks_task_id ON horsies_workflow_tasks (task_id);
CREATE INDEX IF NOT EXISTS ix_horsies_workflow_tasks_sub_workflow_id
    ON horsies_workflow_tasks (sub_workflow_id);
CREATE INDEX IF NOT EXISTS idx_horsies_workflow_tasks_deps
    ON horsies_workflow_tasks USING GIN (dependencies);
"""

# A task's status change that wakes its result waiters (``task_done``), by migration.
_DONE_V1: Final = "NEW.status IN ('COMPLETED', 'FAILED')"
_DONE_V8: Final = (
    "(NEW.status IN ('COMPLETED', 'FAILED')"
    " OR (NEW.status = 'CANCELLED' AND OLD.status = 'RUNNING'))"
)


def _task_changes_function(done: LiteralString) -> LiteralString:
    """The row-level notify function of ``horsies_tasks``; ``done``: when to send ``task_done``."""
    return (
        """
CREATE OR REPLACE FUNCTION horsies_notify_task_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Row-level: also usable as a FOR EACH ROW INSERT trigger (reference behaviour).
    IF TG_OP = 'INSERT' THEN
        IF NEW.status = 'PENDING' THEN
            PERFORM pg_notify('task_new', NEW.id);
            PERFORM pg_notify('task_queue_' || NEW.queue_name, NEW.id);
        END IF;
    ELSIF NEW.status IS DISTINCT FROM OLD.status AND """
        + done
        + """ THEN
        PERFORM pg_notify('task_done', NEW.id);
    END IF;
    RETURN NULL;
END
$$;
"""
    )


def _task_changes_trigger(done: LiteralString) -> LiteralString:
    """The UPDATE trigger that calls it, filtered by ``done`` so that other updates (claims,
    starts) never enter PL/pgSQL."""
    return (
        """
DROP TRIGGER IF EXISTS horsies_task_notify_trigger ON horsies_tasks;
CREATE TRIGGER horsies_task_notify_trigger
    AFTER UPDATE OF status ON horsies_tasks
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status AND """
        + done
        + """)
    EXECUTE FUNCTION horsies_notify_task_changes();
"""
    )


_V1_TRIGGERS: Final = (
    _task_changes_function(_DONE_V1)
    + fragments.tasks_inserted_function(
        "    -- Statement-level: one wake-up per queue and statement, whatever the number of"
        " rows.\n"
    )
    + "\n"
    + _task_changes_trigger(_DONE_V1)
    + """

DROP TRIGGER IF EXISTS horsies_task_insert_notify_trigger ON horsies_tasks;
CREATE TRIGGER horsies_task_insert_notify_trigger
    AFTER INSERT ON horsies_tasks
    REFERENCING NEW TABLE AS horsies_inserted_tasks
    FOR EACH STATEMENT
    EXECUTE FUNCTION horsies_notify_tasks_inserted();

CREATE OR REPLACE FUNCTION horsies_notify_workflow_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status
       AND NEW.status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'PAUSED') THEN
        PERFORM pg_notify('workflow_done', NEW.id);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS horsies_workflow_notify_trigger ON horsies_workflows;
CREATE TRIGGER horsies_workflow_notify_trigger
    AFTER UPDATE OF status ON horsies_workflows
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION horsies_notify_workflow_changes();
"""
)

# Workflow nodes' task rows name their workflow: the worker knows from the claimed row alone that
# finishing it must advance a workflow (and which tree to lock), and cancel finds a workflow's task
# rows without a join. Partial index: plain tasks (NULL) cost nothing. `has_conditions` lets the
# engine skip looking up a node's Python definition when it has no run_when/skip_when.
_V2_TASK_WORKFLOW: Final = """
ALTER TABLE horsies_tasks ADD COLUMN IF NOT EXISTS workflow_id VARCHAR(36);
CREATE INDEX IF NOT EXISTS ix_horsies_tasks_workflow_id
    ON horsies_tasks (workflow_id) WHERE workflow_id IS NOT NULL;
ALTER TABLE horsies_workflow_tasks
    ADD COLUMN IF NOT EXISTS has_conditions BOOLEAN NOT NULL DEFAULT false;
"""

# Finished tasks, per status and worker, newest first: what monitoring asks about a big table
# (counts per status and per worker, a worker's latest finished tasks). Partial: a task enters it
# once, when it finishes, so the queue's hot path (send, claim, start) does not pay for it.
_V3_FINISHED_INDEX: Final = """
CREATE INDEX IF NOT EXISTS ix_horsies_tasks_finished
    ON horsies_tasks (status, claimed_by_worker_id, sent_at DESC NULLS LAST)
    WHERE status NOT IN ('PENDING', 'CLAIMED', 'RUNNING');
"""

# Fencing: every claim of a task (PENDING -> CLAIMED or RUNNING, and re-claiming an expired lease)
# gives the row a new `attempt`, and every later write of that claim (start, heartbeat, finish,
# give-back) names it. A worker that was frozen past the stale thresholds, or a copy of a claim
# whose lease expired, then changes nothing: its attempt is no longer the row's. Unlike
# retry_count, an operator's retry() never resets it. Heartbeats name their attempt too, so a
# frozen attempt's beats cannot keep a newer one alive.
_V4_ATTEMPTS: Final = """
ALTER TABLE horsies_tasks ADD COLUMN IF NOT EXISTS attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE horsies_heartbeats ADD COLUMN IF NOT EXISTS attempt INTEGER;
"""

# A parameterised root workflow (built by WorkflowDefinition.build_with) keeps its parameters, so
# any worker can build it again to evaluate its conditions, as child workflows are rebuilt from
# their parent node's arguments. NULL for workflows built without parameters.
_V5_BUILD_PARAMETERS: Final = """
ALTER TABLE horsies_workflows ADD COLUMN IF NOT EXISTS build_args TEXT;
ALTER TABLE horsies_workflows ADD COLUMN IF NOT EXISTS build_kwargs TEXT;
"""

# A worker that stops cleanly writes one last snapshot with `stopped_at` set: monitors drop it at
# once instead of counting it as live until its snapshots age out, and never report it as dead.
# NULL on every other snapshot, so a worker that dies without stopping still ages into "dead".
_V6_WORKER_STOPPED: Final = """
ALTER TABLE horsies_worker_states ADD COLUMN IF NOT EXISTS stopped_at TIMESTAMPTZ;
"""

_V7_ASYNC_CONCURRENCY: Final = """
ALTER TABLE horsies_worker_states ADD COLUMN IF NOT EXISTS async_concurrency INTEGER;
"""

# A running task that a stop ended (RUNNING -> CANCELLED) wakes its waiters too. A task
# cancelled before it started is notified by the statement that cancels it.
_V8_STOP_REQUESTS: Final = (
    """
ALTER TABLE horsies_tasks ADD COLUMN IF NOT EXISTS cancel_requested_at TIMESTAMPTZ;
"""
    + _task_changes_function(_DONE_V8)
    + _task_changes_trigger(_DONE_V8)
)

# Unique tasks: a send with a key inserts only if no row holds that key (the partial unique index
# decides, so concurrent producers cannot both win). A row keeps its key after it leaves its scope;
# the next send of that key releases it first (broker/unique.py), so no status change on the hot
# path ever touches these columns. `unique_until` bounds a time-window scope.
_V9_UNIQUE_KEYS: Final = """
ALTER TABLE horsies_tasks ADD COLUMN IF NOT EXISTS unique_key TEXT;
ALTER TABLE horsies_tasks ADD COLUMN IF NOT EXISTS unique_scope TEXT;
ALTER TABLE horsies_tasks ADD COLUMN IF NOT EXISTS unique_until TIMESTAMPTZ;
ALTER TABLE horsies_tasks ADD CONSTRAINT horsies_tasks_unique_scope_check CHECK (
    (unique_key IS NULL OR unique_scope IN ('pending', 'active', 'window'))
    AND (unique_scope IS DISTINCT FROM 'window' OR unique_until IS NOT NULL)
);
CREATE UNIQUE INDEX IF NOT EXISTS ux_horsies_tasks_unique_key
    ON horsies_tasks (unique_key) WHERE unique_key IS NOT NULL;
"""

# The rate and concurrency limits a worker enforces, per queue it serves (JSON: queue name ->
# limit names; `{}` when it enforces none, NULL from workers older than this migration): monitors
# tell a limit that no live worker enforces, whose tasks wait until one does.
_V13_WORKER_LIMITS: Final = """
ALTER TABLE horsies_worker_states ADD COLUMN IF NOT EXISTS limits JSONB;
"""

# Autovacuum of the task table that cleans its indexes, often enough. A claim moves its row out of
# the claim index's predicate, so every claimed task leaves a dead entry there that each later
# claim of its queue walks over until a vacuum removes it. On a table holding months of finished
# tasks neither default does: autovacuum waits for 20 % of the table to be dead, and a vacuum that
# finds dead rows on few of the table's pages skips its indexes altogether. Measured at 10 M rows
# (docs/schema.md, "At size"): claims read 118, 250, then 382 buffers over three rounds of a
# drain, a plain VACUUM (0.0 s) changed nothing, one with index cleanup (0.6 s) brought them back.
# 2,000 dead rows plus 0.2 % of the table: about 22,000 at 10 M rows.
_V15_TASK_AUTOVACUUM: Final = """
ALTER TABLE horsies_tasks SET (
    autovacuum_vacuum_scale_factor = 0.002,
    autovacuum_vacuum_threshold = 2000,
    vacuum_index_cleanup = on
);
"""

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "tables, indexes, constraints and NOTIFY triggers",
        _V1_TASKS + _V1_WORKFLOWS + _V1_TRIGGERS,
    ),
    Migration(2, "workflow columns for the engine", _V2_TASK_WORKFLOW),
    Migration(3, "index of finished tasks for monitoring", _V3_FINISHED_INDEX),
    Migration(4, "attempt numbers that fence every write of a claim", _V4_ATTEMPTS),
    Migration(5, "build parameters of parameterised root workflows", _V5_BUILD_PARAMETERS),
    Migration(6, "stop mark of a worker's last snapshot", _V6_WORKER_STOPPED),
    Migration(7, "async tasks a worker child runs at once", _V7_ASYNC_CONCURRENCY),
    Migration(8, "stop requests of running tasks", _V8_STOP_REQUESTS),
    Migration(9, "unique keys of tasks", _V9_UNIQUE_KEYS),
    Migration(10, "rate and concurrency limits", _V10_LIMITS),
    Migration(11, "index of ended tasks for retention", _V11_RETENTION),
    Migration(12, "attempt history of tasks", _V12_ATTEMPTS),
    Migration(13, "limits each worker enforces, in its snapshots", _V13_WORKER_LIMITS),
    Migration(14, "numbered starts of rate-limited keys", _V14_LIMIT_START_NUMBERS),
    Migration(15, "autovacuum of the task table by the queue's dead rows", _V15_TASK_AUTOVACUUM),
    Migration(16, "claimable tasks in a table of their own", _V16_READY),
    Migration(
        17, "limited claims take tasks without a limit from horsies_ready", _V17_LIMIT_CLAIM_READY
    ),
)
"""All migrations, in version order (versions are 1, 2, 3, ... without gaps)."""

# -- version table --------------------------------------------------------------------------------

# Does the version table exist? (fast path of ensure_schema: no lock when already current)
SCHEMA_VERSION_EXISTS: Final = "SELECT to_regclass('horsies_schema_version') IS NOT NULL"

# Create the version table (run under the schema lock).
SCHEMA_VERSION_CREATE: Final = """
CREATE TABLE IF NOT EXISTS horsies_schema_version (
    version     INTEGER     PRIMARY KEY,
    description TEXT        NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""

# Highest applied migration version (0 when none).
SCHEMA_VERSION_SELECT: Final = "SELECT COALESCE(max(version), 0) FROM horsies_schema_version"

# Record an applied migration.
SCHEMA_VERSION_INSERT: Final = """
INSERT INTO horsies_schema_version (version, description) VALUES (%(version)s, %(description)s)
"""

# Serialise schema changes across processes (transaction-scoped; key fixed in broker.migrations).
SCHEMA_VERSION_LOCK: Final = "SELECT pg_advisory_xact_lock(%(key)s)"
