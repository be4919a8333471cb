"""flow.completed: the final outcome and totals of a lead."""

from engine.steps.base import TOTAL_COST, TOTAL_DELIVERED, TOTAL_REVENUE, EventDraft
from engine.steps.completion import complete_flow, finishes


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


def test_the_completion_records_the_state_the_delivery_left() -> None:
    """A seller proves a delivery with the final snapshot: it must hold the delivery's totals,
    not the state the step read before delivering."""
    before = {TOTAL_COST: 2.5, TOTAL_REVENUE: 0.0, TOTAL_DELIVERED: 0, "lead.email": "a@b.co"}
    delivered = EventDraft(
        "recipient.delivered", "success", vars={TOTAL_REVENUE: 33.0, TOTAL_DELIVERED: 1}
    )
    done = complete_flow(before, delivered, "demo")
    assert (done.outcome, done.revenue, done.cost) == ("success", 33.0, 2.5)
    assert done.vars == {TOTAL_REVENUE: 33.0, TOTAL_DELIVERED: 1}


def test_stamped_completion_snapshot_equals_the_last_events() -> None:
    from engine.events import StepIdentity, Timing, stamp_events

    before = {TOTAL_COST: 2.5, TOTAL_REVENUE: 0.0, TOTAL_DELIVERED: 0}
    delivered = EventDraft(
        "recipient.delivered", "success", vars={TOTAL_REVENUE: 33.0, TOTAL_DELIVERED: 1}
    )
    who = StepIdentity("demo", 1, "premier", "Premier", 3, "host", "0")
    events = stamp_events(
        [delivered, complete_flow(before, delivered, "demo")],
        who,
        "01JDEMO0000000000000000000",
        1_700_000_000_000,
        before,
        Timing(1_700_000_000_100, 1_700_000_000_200, 0),
    )
    assert events[1]["vars"] == events[0]["vars"]
    assert events[1]["vars"][TOTAL_REVENUE] == events[1]["revenue"] == 33.0


def test_an_unchanged_snapshot_stays_the_one_the_step_read() -> None:
    """A filtered-out lead changes nothing: the completion reuses the snapshot as it was (the
    codec splices its bytes instead of encoding it again)."""
    before = {TOTAL_COST: 2.5}
    done = complete_flow(before, EventDraft("filter.failed", "failure", "no"), "demo")
    assert done.vars == {}


def test_a_lead_finishes_where_it_stops_or_at_the_last_step() -> None:
    passed = EventDraft("filter.passed", "success")
    assert not finishes(passed, proceed=True, is_last=False, stop_at_first_delivery=False)
    assert finishes(passed, proceed=True, is_last=True, stop_at_first_delivery=False)
    failed = EventDraft("filter.failed", "failure", "no")
    assert finishes(failed, proceed=False, is_last=False, stop_at_first_delivery=False)


def test_a_sold_lead_finishes_at_its_first_buyer_only_if_the_flow_says_so() -> None:
    sold = EventDraft("recipient.delivered", "success")
    assert not finishes(sold, proceed=True, is_last=False, stop_at_first_delivery=False)
    assert finishes(sold, proceed=True, is_last=False, stop_at_first_delivery=True)
    refused = EventDraft("recipient.failed", "failure", "Rejected by buyer")
    assert not finishes(refused, proceed=True, is_last=False, stop_at_first_delivery=True)
