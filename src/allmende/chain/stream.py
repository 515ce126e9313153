"""Follow the contracts' events: poll logs in bounded chunks, in order, surviving RPC hiccups.

The stream remembers the next block it has to read (``next_block``) and, given a cursor file,
persists it after the caller has consumed a batch, so a restarted node resumes where it stopped
(a crash mid-batch replays that batch: handlers must be idempotent, which events make easy since
each carries its block number and log index).

The chain can lose blocks the stream already read: a reorg on a live chain, or a dev chain
restarted from a state file a few seconds old. The stream keeps the number and hash of the last
block it read; when the head falls below it, or that block's hash changed, it sets
``rolled_back`` and reads again from ``from_block``, as a restarted node would. Its caller drops
what it derived from the lost blocks (see the roles' ``reconcile``) and clears the flag.

A head told by a new-block notification may be ahead of the endpoint the logs are read from (a
websocket and an HTTP endpoint behind one provider's balancer). Nodes differ in how they answer
a range past their head: Anvil refuses it (``BlockOutOfRangeError``), Hardhat and geth answer
``[]``. Either way the stream does not trust the range: after a failed read it asks the endpoint
for its own head and reads once more, so a notification never costs a back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from allmende.chain.client import ChainClient
from allmende.chain.events import ChainEvent, EventDecoder
from allmende.errors import ChainError

log = logging.getLogger(__name__)

DEFAULT_CHUNK_BLOCKS = 2_000
DEFAULT_POLL_INTERVAL = 1.0
MAX_BACKOFF = 30.0
# An endpoint that keeps reporting lost blocks (flipping hashes or heads, by fault or to make
# the node replay its whole history and send its transactions again) is followed at most this
# often: past MAX_ROLLBACKS in ROLLBACK_WINDOW seconds, another one is an RPC failure (backed
# off, logged) until the oldest leaves the window.
MAX_ROLLBACKS = 3
ROLLBACK_WINDOW = 600.0


class EventStream:
    """Typed events of the decoder's contracts from ``from_block`` on.

    ``chunk_blocks``: most blocks per ``eth_getLogs`` request; lower it when the RPC provider
    refuses requests as too large. ``poll_interval``: seconds between polls once caught up; lower
    means faster reactions and more RPC load. Neither needs to agree between peers.
    """

    def __init__(
        self,
        client: ChainClient,
        decoder: EventDecoder,
        *,
        from_block: int = 0,
        cursor_file: Path | None = None,
        chunk_blocks: int = DEFAULT_CHUNK_BLOCKS,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        if chunk_blocks < 1:
            raise ValueError(f"chunk_blocks must be >= 1, got {chunk_blocks}.")
        self.client = client
        self.decoder = decoder
        self.cursor_file = cursor_file
        self.chunk_blocks = chunk_blocks
        self.poll_interval = poll_interval
        self.from_block = from_block
        self.next_block = max(from_block, self._load_cursor())
        self._backoff = 0.0
        self._head: int | None = None  # chain head seen by the last successful poll
        self._last_read: tuple[int, str] | None = None  # (number, hash) of the last block read
        self.rolled_back = False  # set when the chain lost blocks this stream had read
        self.head_time: int | None = None  # timestamp of the newest block read
        self._rollbacks: list[float] = []  # monotonic times of the replays in the window
        self.clock = time.monotonic

    def fetch(self, from_block: int, to_block: int) -> list[ChainEvent]:
        """Every typed event in ``[from_block, to_block]``, ordered by block and log index."""
        raw = self.client.get_logs(
            from_block=from_block,
            to_block=to_block,
            addresses=self.decoder.addresses,
            topics=self.decoder.topics,
        )
        events = []
        for entry in raw:
            try:
                event = self.decoder.decode(entry)
            except ChainError as exc:
                log.warning(
                    "skipping a malformed log in block %s: %s", entry.get("blockNumber"), exc
                )
                continue
            if event is not None:
                events.append(event)
        return sorted(events, key=lambda event: (event.block_number, event.log_index))

    def poll(self, head: int | None = None) -> list[ChainEvent]:
        """New events up to the chain head (at most one chunk); [] on an RPC failure (logged).

        ``head``: the newest block, when the caller knows it (a new-block notification); else
        it is asked for. Advances ``next_block`` in memory; call :meth:`commit` once the events
        are handled.
        """
        try:
            try:
                read = self._read_to(head)
            except (ChainError, OSError):
                if head is None:
                    raise
                read = self._read_to(None)  # the endpoint's own head this time
        except (ChainError, OSError) as exc:  # an RPC hiccup: back off, retry
            self._backoff = min(MAX_BACKOFF, max(self.poll_interval, 2 * self._backoff))
            log.warning("event poll failed (%s); retrying in %.1f s", exc, self._backoff)
            return []
        self._backoff = 0.0
        if read is None:  # the chain lost blocks: the next poll reads from the start
            return []
        events, to_block, to_hash = read
        self.next_block = to_block + 1
        if to_hash is not None:  # None: the block went away meanwhile; the next poll sees it
            self._last_read = (to_block, to_hash)
        return events

    def _read_to(self, head: int | None) -> tuple[list[ChainEvent], int, str | None] | None:
        """The events of the next chunk up to ``head`` (asked for if None), its last block
        (``next_block - 1`` when there is nothing new) and that block's hash (None then); None
        when the chain lost blocks this stream had read."""
        head = self._head = self.client.block_number() if head is None else head
        if self._lost_blocks(head):
            return None
        if head < self.next_block:
            return [], self.next_block - 1, None
        to_block = min(head, self.next_block + self.chunk_blocks - 1)
        events = self.fetch(self.next_block, to_block)
        header = self.client.block_header(to_block)
        if header is not None:
            self.head_time = header[1]
        return events, to_block, None if header is None else header[0]

    def _lost_blocks(self, head: int) -> bool:
        """Whether the chain lost blocks this stream read; if so, start again from the start.

        Checked when the head moved away from the last block read (a new block, or fewer
        blocks): the head below it, or another block at its height, means a rollback.
        """
        if self._last_read is None:
            return False
        number, seen_hash = self._last_read
        if head == number:
            return False
        if head > number and self.client.block_hash(number) == seen_hash:
            return False
        now = self.clock()
        self._rollbacks = [t for t in self._rollbacks if now - t < ROLLBACK_WINDOW]
        if len(self._rollbacks) >= MAX_ROLLBACKS:
            raise ChainError(
                f"The chain endpoint reported lost blocks again (the head is {head}, block "
                f"{number} was read), its {len(self._rollbacks) + 1}th rollback in "
                f"{ROLLBACK_WINDOW:.0f} s; not replaying until the oldest is "
                f"{ROLLBACK_WINDOW:.0f} s old. If this is not a dev chain being reset, check "
                "the RPC endpoint."
            )
        self._rollbacks.append(now)
        log.warning(
            "The chain lost blocks this node had read (it read up to block %d, the head is now "
            "%d); reading its events again from block %d.",
            number, head, self.from_block,
        )  # fmt: skip
        self.next_block = self.from_block
        self._last_read = None
        self.rolled_back = True
        return True

    def caught_up(self) -> bool:
        """True when the last poll reached the chain head it saw (no RPC call)."""
        return self._head is not None and self.next_block > self._head

    def commit(self) -> None:
        """Persist ``next_block`` to the cursor file (if any): handled events stay handled."""
        if self.cursor_file is None:
            return
        self.cursor_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cursor_file.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{self.next_block}\n")
        os.replace(tmp, self.cursor_file)

    def follow(self, stop: threading.Event | None = None) -> Iterator[ChainEvent]:
        """Yield events forever (until ``stop`` is set), committing after each consumed batch."""
        stop = stop or threading.Event()
        while not stop.is_set():
            events = self.poll()
            yield from events
            self.commit()
            if self._backoff or self.caught_up():
                stop.wait(self._backoff or self.poll_interval)

    async def follow_async(self, stop: asyncio.Event | None = None) -> AsyncIterator[ChainEvent]:
        """:meth:`follow` for asyncio: RPC calls run in a worker thread, never on the loop."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            events = await asyncio.to_thread(self.poll)
            for event in events:
                yield event
            await asyncio.to_thread(self.commit)
            if self._backoff or self.caught_up():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._backoff or self.poll_interval)

    def _load_cursor(self) -> int:
        if self.cursor_file is None:
            return 0
        try:
            return int(self.cursor_file.read_text().strip())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable event cursor %s (%s)", self.cursor_file, exc)
            return 0
