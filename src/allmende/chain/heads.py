"""New-block notifications: wake the node's roles the moment the chain has a new block.

A role reads events with :class:`~allmende.chain.stream.EventStream` (``eth_getLogs``, which is
what makes it reliable: a cursor, bounded chunks, nothing missed). Polling alone, though, reacts
only at the next poll and costs RPC calls while nothing happens. :class:`HeadWatcher` keeps one
websocket to the chain per node, subscribed to ``newHeads``, and wakes every waiting role when a
block arrives; the roles then poll once. Without a websocket (none configured, or the endpoint
refuses) nothing breaks: :meth:`HeadWatcher.wait` simply times out and the roles poll on their
own schedule, and the watcher keeps trying to connect in the background.

A notification wakes the roles, and its block number spares them asking for the chain head
before they read logs. The websocket endpoint is trusted as much as the RPC endpoint (by default
it is the same node); a malformed notification still wakes the roles but carries no number.

Most blocks hold nothing a role acts on: a trainer does not care about the other trainers'
commits. Given a :class:`LogFilter` (:meth:`HeadWatcher.watch_logs`), the watcher subscribes to
the matching ``logs`` instead of every new head, and wakes the roles only for a block that holds
such a log; its number is then that block's. The roles still read the logs themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from allmende.chain.client import first_topic_filter

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5.0
MAX_NOTIFICATION_BYTES = 64 * 1024  # a block header is about 1 KiB
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)  # waits between reconnection attempts, then the last
STOP_CHECK_SECONDS = 0.5  # at shutdown, how long to wait for the follower before cancelling again


def websocket_url(rpc_url: str) -> str | None:
    """The websocket twin of an http(s) RPC URL (Anvil and geth serve both on one port)."""
    parts = urlsplit(rpc_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        return None
    return urlunsplit((scheme, *parts[1:]))


@dataclass(frozen=True)
class LogFilter:
    """The logs worth a wake-up: of these contracts, and (unless None) with one of these first
    topics (event signatures)."""

    addresses: tuple[str, ...]
    topics: tuple[bytes, ...] | None = None

    def subscription(self) -> list[Any]:
        """``eth_subscribe`` parameters for these logs."""
        query: dict[str, Any] = {"address": list(self.addresses)}
        if self.topics is not None:
            query["topics"] = first_topic_filter(self.topics)
        return ["logs", query]


class HeadWatcher:
    """Counts the chain's new blocks as they are announced; roles wait on the count.

    ``seq`` grows by one per notification (and once more when the node stops). A role reads
    ``seq`` before it polls and passes it to :meth:`wait` afterwards, so a block announced while
    it was polling is never slept through. ``ws_url`` None: no subscription, timeouts only.
    """

    def __init__(self, ws_url: str | None) -> None:
        self.ws_url = ws_url
        self.seq = 0
        self.connected = False
        self.number: int | None = None  # the newest announced block, while connected
        self.logs: LogFilter | None = None
        self._next = asyncio.Event()

    def watch_logs(self, logs: LogFilter | None) -> None:
        """Wake only for blocks holding logs that match ``logs`` (None: every new block); set
        before :meth:`run`."""
        self.logs = logs

    async def wait(self, seen: int, timeout: float) -> None:
        """Return once ``seq`` differs from ``seen``, or after ``timeout`` seconds."""
        if self.seq != seen:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._next.wait(), timeout)

    def forget_number(self) -> None:
        """Drop the newest announced block: the chain lost blocks, so it may be higher than any
        block the chain has now; the next notification sets it again."""
        self.number = None

    def wake(self) -> None:
        """Wake every waiter (a new block, or the node is stopping)."""
        self.seq += 1
        self._next.set()
        self._next = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        """Follow new blocks until ``stopping`` is set; then wake the waiters one last time."""
        follower = asyncio.create_task(self._follow(stopping)) if self.ws_url else None
        try:
            await stopping.wait()
        finally:
            # Python 3.11's wait_for can swallow a cancellation that meets a finishing wait;
            # the follower then goes on, so it is cancelled again until it ends.
            while follower is not None and not follower.done():
                follower.cancel()
                await asyncio.wait({follower}, timeout=STOP_CHECK_SECONDS)
            self.connected = False
            self.number = None
            self.wake()

    async def _follow(self, stopping: asyncio.Event) -> None:
        assert self.ws_url is not None
        failures = 0
        while not stopping.is_set():
            try:
                await self._subscribe_and_listen(self.ws_url)
                reason = "the connection closed"
            except (OSError, TimeoutError, WebSocketException, ValueError) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self.connected:
                failures = 0
            self.connected = False
            self.number = None
            if failures == 0:
                log.info(
                    "No new-block notifications from %s (%s); the roles poll the chain until "
                    "it is back.", self.ws_url, reason,
                )  # fmt: skip
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
            failures += 1

    async def _subscribe_and_listen(self, url: str) -> None:
        async with connect(
            url,
            open_timeout=CONNECT_TIMEOUT_SECONDS,
            max_size=MAX_NOTIFICATION_BYTES,
            compression=None,
        ) as ws:
            params = ["newHeads"] if self.logs is None else self.logs.subscription()
            await ws.send(
                json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": params})
            )
            reply = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT_SECONDS))
            if not isinstance(reply, dict) or "result" not in reply:
                raise ValueError(
                    f"the chain refused the {params[0]} subscription: {reply!r:.200}"
                )
            self.connected = True
            log.info("Following %s at %s.", "new blocks" if self.logs is None else "logs", url)
            self.wake()  # blocks may have come while there was no subscription: look now
            async for message in ws:
                number = _block_number(message)
                if number is not None:
                    self.number = max(number, self.number or 0)  # a log's block may repeat
                self.wake()


def _block_number(message: str | bytes) -> int | None:
    """The block of a ``newHeads`` notification (``number``) or a ``logs`` one
    (``blockNumber``); None for anything else."""
    try:
        result = json.loads(message)["params"]["result"]
        number = result.get("number", result.get("blockNumber"))
        return int(number, 16) if isinstance(number, str) else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
