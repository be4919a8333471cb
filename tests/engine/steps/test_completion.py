"""flow.completed: the final outcome and totals of a lead."""

from engine.steps.base import TOTAL_COST, TOTAL_DELIVERED, TOTAL_REVENUE, EventDraft
from engine.steps.completion import complete_flow


def test_a_delivered_lead_completes_successfully_with_totals() -> None:
    snapshot = {TOTAL_COST: 2.5, TOTAL_REVENUE: 30.0, TOTAL_DELIVERED: 1}
    done = complete_flow(snapshot, EventDraft("recipient.delivered", "success"), "demo")
    assert (done.type, done.outcome, done.cost, done.revenue) == (
        "flow.completed",
        "success",
        2.5,
        30.0,
    )


def test_a_stopped_lead_completes_with_the_outcome_that_stopped_it() -> None:
    last = EventDraft("filter.failed", "failure", "Service area: lead.state is 'WY'")
    done = complete_flow({TOTAL_COST: 2.5}, last, "demo")
    assert (done.outcome, done.reason, done.revenue) == (
        "failure",
        "Service area: lead.state is 'WY'",
        0.0,
    )


def test_a_rejected_lead_has_no_cost() -> None:
    done = complete_flow(
        {}, EventDraft("source.rejected", "failure", "Missing required field: email"), "demo"
    )
    assert (done.outcome, done.cost) == ("failure", 0.0)
