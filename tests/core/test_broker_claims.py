"""Claim budget planning (pure): local budget, queue caps, and max_claim_batch honoured in both
queue modes."""

from __future__ import annotations

from horsies.broker.claim_plan import (
    ClaimRequest,
    InFlight,
    QueueClaimSpec,
    claim_order,
    needs_cluster_counts,
    plan_claims,
    simulate_pass,
)

DEFAULT = [QueueClaimSpec("default", 100, None)]
CUSTOM = [
    QueueClaimSpec("low", priority=50, max_concurrency=10),
    QueueClaimSpec("urgent", priority=1, max_concurrency=10),
    QueueClaimSpec("normal", priority=10, max_concurrency=10),
]


def req(queues: list[QueueClaimSpec], **kw: object) -> ClaimRequest:
    params: dict[str, object] = {"local_budget": 4, "max_claim_batch": 0}
    params.update(kw)
    return ClaimRequest(queues=queues, **params)  # type: ignore[arg-type]


def test_hard_cap_pass_takes_at_most_the_local_budget() -> None:
    plan = plan_claims(req(DEFAULT, local_budget=3), {})
    assert plan.total == 3
    assert simulate_pass(plan, {"default": 100}) == {"default": 3}


def test_no_free_capacity_claims_nothing() -> None:
    plan = plan_claims(req(DEFAULT, local_budget=0), {})
    assert plan.total == 0
    assert simulate_pass(plan, {"default": 100}) == {}
    assert plan_claims(req(DEFAULT, local_budget=-2), {}).total == 0


def test_max_claim_batch_caps_each_queue_in_default_mode() -> None:
    plan = plan_claims(req(DEFAULT, local_budget=8, max_claim_batch=2), {})
    assert simulate_pass(plan, {"default": 100}) == {"default": 2}


def test_max_claim_batch_caps_each_queue_in_custom_mode_too() -> None:
    plan = plan_claims(req(CUSTOM, local_budget=8, max_claim_batch=2), {})
    assert simulate_pass(plan, {"urgent": 100, "normal": 100, "low": 100}) == {
        "urgent": 2,
        "normal": 2,
        "low": 2,
    }


def test_max_claim_batch_zero_means_no_per_queue_cap() -> None:
    plan = plan_claims(req(DEFAULT, local_budget=8, max_claim_batch=0), {})
    assert simulate_pass(plan, {"default": 100}) == {"default": 8}


def test_queues_are_visited_most_urgent_first_and_fill_strictly() -> None:
    assert [q.name for q in claim_order(CUSTOM)] == ["urgent", "normal", "low"]
    plan = plan_claims(req(CUSTOM, local_budget=5), {})
    assert [name for name, _ in plan.queue_limits] == ["urgent", "normal", "low"]
    # The urgent queue takes what it can; the rest of the budget flows to the next queue.
    assert simulate_pass(plan, {"urgent": 3, "normal": 10, "low": 10}) == {"urgent": 3, "normal": 2}


def test_equal_priorities_keep_configured_order() -> None:
    queues = [QueueClaimSpec("b", 5), QueueClaimSpec("a", 5), QueueClaimSpec("c", 1)]
    assert [q.name for q in claim_order(queues)] == ["c", "b", "a"]


def test_queue_max_concurrency_counts_running_and_claimed_in_hard_cap_mode() -> None:
    queues = [QueueClaimSpec("q", 1, max_concurrency=5)]
    plan = plan_claims(req(queues, local_budget=10), {"q": InFlight(running=2, claimed=2)})
    assert plan.queue_limits == (("q", 1),)


def test_queue_max_concurrency_counts_only_running_in_soft_cap_mode() -> None:
    queues = [QueueClaimSpec("q", 1, max_concurrency=5)]
    request = req(queues, local_budget=10, soft_cap=True, claim_lease_ms=1000)
    plan = plan_claims(request, {"q": InFlight(running=2, claimed=2)})
    assert plan.queue_limits == (("q", 3),)


def test_full_queue_is_skipped_and_budget_goes_to_the_next() -> None:
    plan = plan_claims(
        req(CUSTOM, local_budget=4), {"urgent": InFlight(running=10), "normal": InFlight(claimed=9)}
    )
    assert simulate_pass(plan, {"urgent": 5, "normal": 5, "low": 5}) == {"normal": 1, "low": 3}


def test_cluster_wide_cap_limits_the_total_across_queues() -> None:
    request = req(DEFAULT, local_budget=10, cluster_wide_cap=6)
    plan = plan_claims(request, {"default": InFlight(running=2, claimed=1), "other": InFlight(2)})
    assert plan.total == 1  # 6 - (3 + 2)
    assert plan_claims(request, {"default": InFlight(running=9)}).total == 0


def test_local_budget_below_cluster_cap_wins() -> None:
    plan = plan_claims(req(DEFAULT, local_budget=2, cluster_wide_cap=100), {})
    assert plan.total == 2


def test_cluster_counts_are_needed_only_with_a_cluster_limit() -> None:
    assert not needs_cluster_counts(req(DEFAULT))
    assert needs_cluster_counts(req(DEFAULT, cluster_wide_cap=3))
    assert needs_cluster_counts(req(CUSTOM))


def test_duplicate_queue_names_are_planned_once() -> None:
    plan = plan_claims(req([*DEFAULT, *DEFAULT], local_budget=3), {})
    assert plan.queue_limits == (("default", 3),)
