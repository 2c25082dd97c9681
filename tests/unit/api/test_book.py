"""The request book on its own: every request answered exactly once, by the rules."""

from __future__ import annotations

import pytest

from tests.support.kv import kv_replica
from zraft.api import codes
from zraft.api.book import Leadership, RequestBook, WriteStep
from zraft.api.routes import Request, Route
from zraft.core import Entry, ReadPurpose

LEADER = Leadership(True, 3, "n1", "tcp://n1", accepting=True)
FOLLOWER = Leadership(False, 3, "n1", "tcp://n1")
NO_LEADER = Leadership(False, 3, "", None)


def make_book(**kw) -> RequestBook:
    replica = kv_replica()
    return RequestBook(
        replica.commands, replica, timeout_s=5.0, max_pending=kw.pop("max_pending", 10), **kw
    )


def write(book: RequestBook, now: float = 0.0, **req):
    body = {"cmd": "set", "key": "k", "value": 1}
    request = Request(body, id=req.pop("rid", 1), **req)
    return book.admit(Route(address=[b"c"], started=now), request, now)


def codes_of(book: RequestBook) -> list[str]:
    return [r.outcome.code if not r.outcome.ok else "ok" for r in book.take_replies()]


def test_a_request_for_an_undeclared_command_is_refused_naming_it() -> None:
    book = make_book()
    route = Route(address=[b"c"])
    assert book.admit(route, Request({"cmd": "nope"}, id=7), 0.0) is None
    (reply,) = book.take_replies()
    assert reply.outcome.code == codes.UNKNOWN_COMMAND and "nope" in reply.outcome.message
    assert reply.route.rid == 7 and route.command == "?"  # never a metric label


def test_a_leader_proposes_and_answers_only_when_the_entry_is_applied() -> None:
    book = make_book()
    p = write(book)
    assert book.route_write(p, LEADER) is WriteStep.PROPOSE
    book.proposed(p, 5, 3)
    assert book.take_replies() == []
    book.applied(5, 3, book.replica.apply(_entry(book, 5, 3)))
    (reply,) = book.take_replies()
    assert reply.outcome.ok and (reply.index, reply.term) == (5, 3)


def test_a_write_whose_index_got_another_terms_entry_is_lost_and_counted() -> None:
    book = make_book()
    p = write(book)
    book.proposed(p, 5, 3)
    book.applied(5, 4, None)  # Raft §5.4.3: another term's entry committed at 5
    assert codes_of(book) == [codes.NOT_LEADER] and book.lost == 1


def test_fenced_writes_are_proposed_only_in_their_term() -> None:
    book = make_book()
    assert book.route_write(write(book, fence=2), LEADER) is WriteStep.ANSWERED
    assert codes_of(book) == [codes.FENCED]
    assert book.route_write(write(book, fence=3), LEADER) is WriteStep.PROPOSE


def test_too_many_pending_writes_are_refused_as_overloaded() -> None:
    book = make_book(max_pending=1)
    book.proposed(write(book), 1, 3)
    assert book.route_write(write(book), LEADER) is WriteStep.ANSWERED
    assert codes_of(book) == [codes.OVERLOADED]


def test_a_follower_forwards_or_redirects_and_never_forwards_twice() -> None:
    book = make_book()
    assert book.route_write(write(book), FOLLOWER) is WriteStep.FORWARD
    assert book.route_write(write(book, forward=False), FOLLOWER) is WriteStep.ANSWERED
    (reply,) = book.take_replies()
    assert reply.outcome.code == codes.NOT_LEADER and reply.extra["leader_client"] == "tcp://n1"
    forwarded = book.admit(Route(peer="n2", fwd_id=9), Request({"cmd": "del", "key": "k"}), 0.0)
    assert book.route_write(forwarded, FOLLOWER) is WriteStep.ANSWERED
    assert codes_of(book) == [codes.NOT_LEADER]


def test_without_a_leader_writes_wait_and_expire_with_no_leader() -> None:
    book = make_book()
    p = write(book, now=1.0)
    assert book.route_write(p, NO_LEADER) is WriteStep.PARKED
    book.expire(5.9)
    assert book.take_replies() == []
    book.expire(6.0)
    assert codes_of(book) == [codes.NO_LEADER] and book.waiting == []


def test_a_handing_over_leader_parks_writes_until_it_leads_or_a_leader_is_known() -> None:
    book = make_book()
    p = write(book)
    assert book.route_write(p, Leadership(True, 3, "n1", None, accepting=False)) is WriteStep.PARKED
    (again,) = book.take_waiting()
    assert again is p and book.route_write(again, LEADER) is WriteStep.PROPOSE


def test_unanswered_writes_time_out_saying_the_outcome_is_unknown() -> None:
    book = make_book()
    book.proposed(write(book), 5, 3)
    book.expire(10.0)
    (reply,) = book.take_replies()
    assert reply.outcome.code == codes.TIMEOUT and "unknown" in reply.outcome.message
    assert book.timed_out == 1 and book.writes == {}


def test_reads_share_one_read_index_and_wait_until_applied_far_enough() -> None:
    book = make_book()
    for i in range(3):
        book.add_read(book.admit(Route(address=[b"c"]), Request({"cmd": "get", "key": "k"}, i), 0))
    ctx = book.read_batch()
    assert ctx is not None and ctx.purpose is ReadPurpose.CLIENT and book.read_batch() is None
    book.read_state(ctx, 2, rejected=False)  # thesis §6.4: wait until applied >= 2
    assert book.take_replies() == [] and book.counts() == (0, 3)
    book.replica.apply(Entry(1, 1))
    book.replica.apply(Entry(1, 2))
    book.served_applied()
    assert codes_of(book) == ["ok", "ok", "ok"] and book.counts() == (0, 0)


def test_a_rejected_read_index_sends_the_reads_back_to_wait_for_a_leader() -> None:
    book = make_book()
    book.add_read(book.admit(Route(address=[b"c"]), Request({"cmd": "get", "key": "k"}), 0))
    ctx = book.read_batch()
    book.read_state(ctx, 0, rejected=True)
    assert book.take_replies() == [] and len(book.waiting) == 1


def test_stale_reads_are_served_at_once_from_local_state() -> None:
    book = make_book()
    book.add_read(
        book.admit(Route(address=[b"c"]), Request({"cmd": "get", "key": "k"}, stale=True), 0)
    )
    assert codes_of(book) == ["ok"] and book.read_batch() is None


@pytest.mark.parametrize("control", ["local_reads", "ack_before_commit"])
def test_the_negative_controls_skip_exactly_their_protection(control: str) -> None:
    book = make_book(unsafe=frozenset({control}))
    if control == "local_reads":
        book.add_read(book.admit(Route(address=[b"c"]), Request({"cmd": "get", "key": "k"}), 0))
        assert book.read_batch() is None
    else:
        book.proposed(write(book), 5, 3)
        assert book.writes == {}
    assert codes_of(book) == ["ok"]


def test_closing_answers_everything_and_writes_hear_their_outcome_is_unknown() -> None:
    book = make_book()
    book.proposed(write(book), 5, 3)
    book.forwarded(write(book), book.next_forward_id())
    book.park(write(book))
    book.add_read(book.admit(Route(address=[b"c"]), Request({"cmd": "get", "key": "k"}), 0))
    book.close()
    got = codes_of(book)
    assert got == [codes.TIMEOUT, codes.TIMEOUT, codes.SHUTTING_DOWN, codes.SHUTTING_DOWN]
    assert book.counts() == (0, 0) and not book.waiting and not book.batch


def _entry(book: RequestBook, index: int, term: int) -> Entry:
    data = book.replica.command_data(1000, "", 0, {"cmd": "set", "key": "k", "value": 1})
    return Entry(term, index, data=data)


def test_a_write_whose_index_is_reused_by_a_later_proposal_is_answered_as_lost() -> None:
    # Review finding: a second proposal at the same index (this node led, was
    # truncated, and leads again) overwrote the first, which was never answered.
    book = make_book()
    book.proposed(write(book), 5, 3)
    book.proposed(write(book, rid=2), 5, 4)
    assert codes_of(book) == [codes.NOT_LEADER] and book.lost == 1 and len(book.writes) == 1


def test_writes_covered_by_an_installed_snapshot_are_answered_as_unknown_at_once() -> None:
    """Without this they would wait for their deadline: their entries never apply here."""
    book = make_book()
    book.proposed(write(book, rid=1), 5, 3)
    book.proposed(write(book, rid=2), 9, 3)
    book.installed(7)
    (reply,) = book.take_replies()
    assert reply.route.rid == 1 and reply.outcome.code == codes.TIMEOUT
    assert "snapshot" in reply.outcome.message and "unknown" in reply.outcome.message
    assert list(book.writes) == [9]
