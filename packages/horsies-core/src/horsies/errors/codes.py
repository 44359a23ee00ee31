"""Error codes: the stable identifiers carried by every library error."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ErrorCode"]


class ErrorCode(StrEnum):
    """Stable identifiers of library errors (value = the code string, e.g. ``"E200"``).

    Ranges: E001-E099 workflow validation, E100-E199 task definition, E200-E299 configuration
    and CLI, E300-E399 task registry. Each code has one meaning, listed in docs/errors.md, and
    never changes it, so codes are safe to match on in tests and logs.
    """

    WORKFLOW_NO_NAME = "E001"
    WORKFLOW_NO_NODES = "E002"
    WORKFLOW_INVALID_NODE_ID = "E003"
    WORKFLOW_DUPLICATE_NODE_ID = "E004"
    WORKFLOW_NO_ROOT_TASKS = "E005"
    WORKFLOW_INVALID_DEPENDENCY = "E006"
    WORKFLOW_CYCLE_DETECTED = "E007"
    WORKFLOW_INVALID_ARGS_FROM = "E008"
    WORKFLOW_INVALID_CTX_FROM = "E009"
    WORKFLOW_CTX_PARAM_MISSING = "E010"
    WORKFLOW_INVALID_OUTPUT = "E011"
    WORKFLOW_INVALID_SUCCESS_POLICY = "E012"
    WORKFLOW_INVALID_JOIN = "E013"
    WORKFLOW_UNRESOLVED_QUEUE = "E014"
    WORKFLOW_UNRESOLVED_PRIORITY = "E015"
    WORKFLOW_INVALID_SUBWORKFLOW_RETRY_MODE = "E017"
    WORKFLOW_SUBWORKFLOW_APP_MISSING = "E018"
    WORKFLOW_INVALID_NODE_ARGS = "E019"

    TASK_NO_RETURN_TYPE = "E100"
    TASK_INVALID_RETURN_TYPE = "E101"
    TASK_INVALID_OPTIONS = "E102"
    TASK_INVALID_QUEUE = "E103"

    CONFIG_INVALID_QUEUE_MODE = "E200"
    CONFIG_INVALID_CLUSTER_CAP = "E201"
    CONFIG_INVALID_PREFETCH = "E202"
    BROKER_INVALID_URL = "E203"
    CONFIG_INVALID_RECOVERY = "E204"
    CONFIG_INVALID_SCHEDULE = "E205"
    CLI_INVALID_ARGS = "E206"
    WORKER_INVALID_LOCATOR = "E207"
    APP_LOAD_FAILED = "E208"
    BROKER_UNREACHABLE = "E209"
    CLI_COMMAND_UNAVAILABLE = "E210"
    TESTING_HELPER_UNAVAILABLE = "E213"

    TASK_NOT_REGISTERED = "E300"
    TASK_DUPLICATE_NAME = "E301"
