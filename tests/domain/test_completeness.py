"""The completeness proof's rules on plain values (the walks themselves: tests/api)."""

from __future__ import annotations

from jobsync.domain.completeness import (
    Head,
    IdOrder,
    arrived_below_the_head,
    counted,
    stood_still_or_grew_at_the_head,
    walk_adds_up,
)


def _order(*pages: list[str]) -> IdOrder:
    order, seen = IdOrder(), set()
    for ids in pages:
        order.take(ids, seen)
        seen.update(ids)
    return order


def test_ids_newest_first_across_pages_are_consistent_as_numbers():
    order = _order(["120", "99"], ["98", "7"])  # 120 > 99 as numbers, not as text
    assert order.consistent and order.newest == 120
    assert order.newer_than_all("121") and not order.newer_than_all("120")
    assert not order.newer_than_all("job-1")


def test_jobs_pushed_down_by_arrivals_may_repeat_at_the_top_of_a_page():
    assert _order(["9", "8", "7"], ["7", "6", "5"]).consistent  # 7 seen: a duplicate
    assert not _order(["9", "8", "7"], ["10", "6", "5"]).consistent  # 10 is new: out of place


def test_a_page_out_of_order_or_mixed_kinds_of_id_is_no_order():
    assert not _order(["1", "2"]).consistent
    assert not _order(["9", "8"], ["b", "a"]).consistent
    assert _order(["job-c", "job-b"], ["job-a"]).consistent


def test_the_head_takes_arrivals_above_the_first_known_job_only():
    order = _order(["30", "20", "10"])
    head = Head(known={"30", "20", "10"}, order=order)
    assert head.take(5, ["32", "31", "30"], first=True)
    assert head.new == ["32", "31"] and not head.new_out_of_place
    assert stood_still_or_grew_at_the_head(3, ["30", "20", "10"], order, head) is None


def test_an_unseen_job_below_a_known_one_or_not_newest_is_out_of_place():
    order = _order(["30", "20", "10"])
    below = Head(known={"30", "20", "10"}, order=order)
    below.take(4, ["30", "25", "20"], first=True)
    assert below.new_out_of_place
    older = Head(known={"30", "20", "10"}, order=order)
    older.take(4, ["15"], first=True)
    assert older.new_out_of_place


def test_a_count_short_of_the_arrivals_means_a_job_left():
    order = _order(["30", "20", "10"])
    head = Head(known={"30", "20", "10"}, order=order)
    head.take(3, ["31", "30", "20"], first=True)  # one arrived, count unchanged: one left
    reason = stood_still_or_grew_at_the_head(3, ["30", "20", "10"], order, head)
    assert reason is not None and "3 jobs, then 3, with 1 new" in reason


def test_a_walk_must_add_up_to_page_ones_count():
    assert walk_adds_up(5, 5) is None and walk_adds_up(None, 3) is None
    assert "4 distinct records where page 1 reported 5" in (walk_adds_up(5, 4) or "")


def test_without_a_count_only_one_page_proves_anything():
    assert counted(None, 1) is None and counted(50, 5) is None
    assert "reports no count" in (counted(None, 2) or "")
    order = _order(["30", "20", "10"])
    head = Head(known={"30", "20", "10"}, order=order)
    head.take(None, ["30", "20", "10"], first=True)  # the same head, and no count either time
    assert "reports no count" in (stood_still_or_grew_at_the_head(None, ["30"], order, head) or "")


def test_a_job_not_listed_before_may_only_appear_above_every_job_listed_before():
    listed = ["new1", "new2", "old1", "old2", "new3"]
    assert arrived_below_the_head(listed[:4], {"new1", "new2"}, set()) is None
    assert arrived_below_the_head(["a", "b"], {"a", "b"}, set()) is None  # all new: a first sync
    reason = arrived_below_the_head(listed, {"new1", "new2", "new3"}, set())
    assert reason is not None and "job new3, not listed before" in reason
    # Seen arriving at the head when it was read again: first seen last, but at the head.
    assert arrived_below_the_head(listed, {"new1", "new2", "new3"}, {"new3"}) is None
