"""`RecoveryConfig`: when stuck tasks are recovered, and the rule that each stale threshold leaves
room for at least one missed heartbeat."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from horsies.config.model import ConfigModel
from horsies.errors import ConfigurationError, ErrorCode, HorsiesError, raise_collected

__all__ = ["RecoveryConfig"]


def _stale_threshold_error(
    threshold_field: str, threshold: int, interval_field: str, interval: int, role: str
) -> ConfigurationError:
    minimum = 2 * interval
    return ConfigurationError(
        f"{threshold_field} too low",
        code=ErrorCode.CONFIG_INVALID_RECOVERY,
        notes=[
            f"{threshold_field}={threshold}, {interval_field}={interval}",
            f"a {role} must be allowed to miss at least one heartbeat before it is declared stale",
        ],
        help_text=(
            f"set {threshold_field} to at least {minimum} (2 x {interval_field}),\n"
            f"or lower {interval_field}"
        ),
    )


class RecoveryConfig(ConfigModel):
    """When and how stuck tasks are recovered (all durations in milliseconds).

    A CLAIMED task whose claimer heartbeat is older than `claimed_stale_threshold_ms` goes back to
    PENDING (if `auto_requeue_stale_claimed`); a RUNNING task whose runner heartbeat is older than
    `running_stale_threshold_ms` fails with WORKER_CRASHED (if `auto_fail_stale_running`). Each
    threshold must be at least twice its heartbeat interval (E204).
    """

    auto_requeue_stale_claimed: bool = True
    claimed_stale_threshold_ms: int = Field(default=120_000, ge=1_000, le=3_600_000)
    auto_fail_stale_running: bool = True
    running_stale_threshold_ms: int = Field(default=300_000, ge=1_000, le=7_200_000)
    check_interval_ms: int = Field(default=30_000, ge=1_000, le=600_000)
    runner_heartbeat_interval_ms: int = Field(default=30_000, ge=1_000, le=120_000)
    claimer_heartbeat_interval_ms: int = Field(default=30_000, ge=1_000, le=120_000)

    @model_validator(mode="after")
    def _check_heartbeat_margins(self) -> Self:
        errors: list[HorsiesError] = []
        if self.running_stale_threshold_ms < 2 * self.runner_heartbeat_interval_ms:
            errors.append(
                _stale_threshold_error(
                    "running_stale_threshold_ms",
                    self.running_stale_threshold_ms,
                    "runner_heartbeat_interval_ms",
                    self.runner_heartbeat_interval_ms,
                    "running task",
                )
            )
        if self.claimed_stale_threshold_ms < 2 * self.claimer_heartbeat_interval_ms:
            errors.append(
                _stale_threshold_error(
                    "claimed_stale_threshold_ms",
                    self.claimed_stale_threshold_ms,
                    "claimer_heartbeat_interval_ms",
                    self.claimer_heartbeat_interval_ms,
                    "claimed task",
                )
            )
        raise_collected(errors, "RecoveryConfig")
        return self
