"""EventStream: bounded chunks, in order, a persisted cursor, and RPC hiccups survived."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from allmende.chain.events import ChainEvent
from allmende.chain.stream import MAX_ROLLBACKS, ROLLBACK_WINDOW, EventStream
from allmende.errors import ChainError


class FakeDecoder:
    addresses: ClassVar[list[str]] = ["0x5FbDB2315678afecb367f032d93F642f64180aa3"]
    topics: ClassVar[list[bytes] | None] = None

    def decode(self, log: dict[str, Any]) -> ChainEvent | None:
        if log.get("bad"):
            raise ChainError("malformed")
        return ChainEvent(
            block_number=log["blockNumber"], log_index=log["logIndex"], tx_hash="0x", address=""
        )


class FakeClient:
    """A chain with one log per block; ``failures`` makes the next calls fail like a dead RPC."""

    def __init__(self, head: int) -> None:
        self.head = head
        self.failures: list[Exception] = []
        self.requests: list[tuple[int, int]] = []
        self.forks: dict[int, int] = {}  # block -> how often it was replaced (a reorg)

    def block_hash(self, number: int) -> str | None:
        header = self.block_header(number)
        return None if header is None else header[0]

    def block_header(self, number: int) -> tuple[str, int] | None:
        if number > self.head:
            return None
        return f"0x{number:x}-{self.forks.get(number, 0)}", 1_000 + 12 * number

    def block_number(self) -> int:
        if self.failures:
            raise self.failures.pop(0)
        return self.head

    def get_logs(
        self, *, from_block: int, to_block: int, addresses: list[str], topics: Any = None
    ) -> list[Any]:
        self.requests.append((from_block, to_block))
        logs = [{"blockNumber": b, "logIndex": 0} for b in range(from_block, to_block + 1)]
        return list(reversed(logs))  # the stream must sort


def stream(client: FakeClient, **kwargs: Any) -> EventStream:
    return EventStream(client, FakeDecoder(), poll_interval=0.01, **kwargs)  # type: ignore[arg-type]


def test_polls_in_bounded_chunks_in_order() -> None:
    client = FakeClient(head=9)
    events = stream(client, from_block=0, chunk_blocks=4)
    seen = [e.block_number for _ in range(3) for e in events.poll()]
    assert seen == list(range(10))
    assert client.requests == [(0, 3), (4, 7), (8, 9)]
    assert events.poll() == [] and events.next_block == 10


def test_cursor_file_resumes_a_restarted_stream(tmp_path: Path) -> None:
    cursor = tmp_path / "cursor"
    client = FakeClient(head=5)
    first = stream(client, cursor_file=cursor)
    assert len(first.poll()) == 6
    restarted_before_commit = stream(client, cursor_file=cursor)
    assert restarted_before_commit.next_block == 0  # unhandled events are delivered again
    first.commit()
    client.head = 7
    resumed = stream(client, cursor_file=cursor)
    assert [e.block_number for e in resumed.poll()] == [6, 7]


def test_from_block_later_than_the_cursor_wins(tmp_path: Path) -> None:
    cursor = tmp_path / "cursor"
    cursor.write_text("3\n")
    assert stream(FakeClient(head=0), cursor_file=cursor, from_block=5).next_block == 5
    assert stream(FakeClient(head=0), cursor_file=cursor, from_block=1).next_block == 3


def test_unreadable_cursor_starts_over(tmp_path: Path) -> None:
    cursor = tmp_path / "cursor"
    cursor.write_text("garbage")
    assert stream(FakeClient(head=0), cursor_file=cursor).next_block == 0


@pytest.mark.parametrize(
    "failure",
    [ChainError("refused"), requests.ConnectionError("refused"), requests.Timeout("slow")],
)
def test_rpc_hiccups_back_off_and_then_continue(failure: Exception) -> None:
    client = FakeClient(head=2)
    client.failures = [failure, failure]
    events = stream(client)
    assert events.poll() == [] and events.poll() == []
    assert events.next_block == 0
    assert [e.block_number for e in events.poll()] == [0, 1, 2]


def test_follow_survives_a_hiccup_and_stops_when_asked() -> None:
    import threading

    client = FakeClient(head=1)
    client.failures = [ChainError("down")]
    stop = threading.Event()
    events = stream(client)
    seen = []
    for event in events.follow(stop):
        seen.append(event.block_number)
        if len(seen) == 2:
            stop.set()
    assert seen == [0, 1]


def test_malformed_logs_are_skipped() -> None:
    class OneBadLog(FakeClient):
        def get_logs(self, **kwargs: Any) -> list[Any]:
            return [{"bad": True}, {"blockNumber": 0, "logIndex": 1}]

    assert [e.log_index for e in stream(OneBadLog(head=0)).poll()] == [1]


def test_chunk_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="chunk_blocks"):
        stream(FakeClient(head=0), chunk_blocks=0)


def test_follow_catches_up_through_empty_chunks_without_sleeping() -> None:
    import threading

    class EmptyChain(FakeClient):
        def get_logs(self, **kwargs: Any) -> list[Any]:
            super().get_logs(**kwargs)
            return []

    client = EmptyChain(head=999)
    events = EventStream(client, FakeDecoder(), chunk_blocks=10, poll_interval=3600)  # type: ignore[arg-type]
    stop = threading.Event()
    follower = events.follow(stop)
    thread = threading.Thread(target=lambda: next(follower, None), daemon=True)
    thread.start()
    for _ in range(6000):  # wait up to a minute; an hour's sleep between chunks would stall
        if events.caught_up():
            break
        threading.Event().wait(0.01)
    stop.set()
    thread.join(timeout=10)
    assert events.caught_up() and len(client.requests) == 100


def test_a_stream_is_caught_up_only_after_a_poll_reached_the_head() -> None:
    client = FakeClient(head=3)
    events = stream(client, from_block=2, chunk_blocks=1)
    assert not events.caught_up()  # nothing polled yet
    events.poll()
    assert not events.caught_up()
    events.poll()
    assert events.caught_up()
    client.failures = [ChainError("down")]
    events.poll()
    assert events.caught_up()  # a failed poll does not forget what was read


def test_a_known_head_is_read_up_to_without_asking_the_chain_for_it() -> None:
    client = FakeClient(head=9)
    client.failures = [AssertionError("block_number must not be called")]
    events = stream(client, from_block=0)
    assert [e.block_number for e in events.poll(head=5)] == [0, 1, 2, 3, 4, 5]
    assert client.requests == [(0, 5)] and events.caught_up()
    assert client.failures  # never asked


def test_a_head_below_the_last_block_read_replays_from_the_start() -> None:
    client = FakeClient(head=9)
    events = stream(client, from_block=2)
    assert len(events.poll()) == 8
    client.head = 5  # the chain lost blocks 6..9 (a dev chain restarted from an older state)
    assert events.poll() == [] and events.rolled_back
    assert events.next_block == 2
    assert [e.block_number for e in events.poll()] == [2, 3, 4, 5]


def test_another_block_at_the_height_read_is_a_reorg() -> None:
    client = FakeClient(head=6)
    events = stream(client)
    events.poll()
    client.forks[6] = 1  # block 6 replaced, and a new block on top of it
    client.head = 7
    assert events.poll() == [] and events.rolled_back
    assert [e.block_number for e in events.poll()][-2:] == [6, 7]


def test_new_blocks_on_the_same_chain_are_no_rollback() -> None:
    client = FakeClient(head=3)
    events = stream(client)
    events.poll()
    for head in (3, 4, 8):
        client.head = head
        events.poll()
        assert not events.rolled_back
    assert events.next_block == 9


class AnvilLikeClient(FakeClient):
    """Refuses a log range past its head, as Anvil does (Hardhat and geth answer ``[]``)."""

    def get_logs(
        self, *, from_block: int, to_block: int, addresses: list[str], topics: Any = None
    ) -> list[Any]:
        if to_block > self.head:
            self.requests.append((from_block, to_block))
            message = f"block height is {self.head} but requested was {to_block}"
            raise ChainError(
                "The RPC call eth_getLogs failed: {'code': -32602, 'message': "
                f"'BlockOutOfRangeError: {message}'}}."
            )
        return super().get_logs(from_block=from_block, to_block=to_block, addresses=addresses)


def test_a_notified_head_the_endpoint_has_not_reached_costs_no_back_off() -> None:
    """The websocket told of block 12; the HTTP endpoint serves up to 10 and refuses the range."""
    client = AnvilLikeClient(head=10)
    events = stream(client, from_block=5)
    assert [e.block_number for e in events.poll(head=12)] == [5, 6, 7, 8, 9, 10]
    assert client.requests == [(5, 12), (5, 10)]  # refused, then read to the endpoint's head
    assert events._backoff == 0.0 and events.next_block == 11
    client.head = 12
    assert [e.block_number for e in events.poll(head=12)] == [11, 12]


def test_a_failure_with_the_endpoints_own_head_still_backs_off() -> None:
    client = AnvilLikeClient(head=10)
    client.failures = [ChainError("Cannot reach the chain")]
    events = stream(client, from_block=5)
    assert events.poll(head=12) == []  # refused past the head, then the chain is unreachable
    assert events._backoff > 0 and events.next_block == 5


def test_the_newest_block_reads_time_is_kept() -> None:
    client = FakeClient(head=4)
    events = stream(client)
    assert events.head_time is None
    events.poll()
    assert events.head_time == 1_000 + 12 * 4


def test_an_endpoint_that_keeps_losing_blocks_is_replayed_at_most_three_times_a_window() -> None:
    """A hostile or broken endpoint flips the hash of the block last read on every poll: each
    flip would replay the whole history (and make the roles send their transactions again).
    Past MAX_ROLLBACKS in the window, a flip is an RPC failure: backed off, not replayed."""
    clock = [0.0]
    client = FakeClient(head=4)
    events = stream(client)
    events.clock = lambda: clock[0]
    events.poll()
    replays = 0
    for flip in range(1, 8):
        clock[0] += 10.0
        client.forks[client.head] = flip  # the block last read "changed" again
        client.head += 1
        events.poll()
        if events.rolled_back:
            replays += 1
            events.rolled_back = False
            events.poll()  # the replay reads from the start up to the head
    assert replays == MAX_ROLLBACKS
    assert events._backoff > 0  # the refused ones count as failures of the endpoint
    assert events.next_block > 1  # and no replay started
    clock[0] += ROLLBACK_WINDOW  # the window passes: a rollback is followed again
    client.forks[client.head] = 99
    client.head += 1
    events.poll()
    assert events.rolled_back and events.next_block == 0
