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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5.0
MAX_NOTIFICATION_BYTES = 64 * 1024  # a block header is about 1 KiB
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)  # waits between reconnection attempts, then the last


def websocket_url(rpc_url: str) -> str | None:
    """The websocket twin of an http(s) RPC URL (Anvil and geth serve both on one port)."""
    parts = urlsplit(rpc_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        return None
    return urlunsplit((scheme, *parts[1:]))


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
        self._next = asyncio.Event()

    async def wait(self, seen: int, timeout: float) -> None:
        """Return once ``seq`` differs from ``seen``, or after ``timeout`` seconds."""
        if self.seq != seen:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._next.wait(), timeout)

    def wake(self) -> None:
        """Wake every waiter (a new block, or the node is stopping)."""
        self.seq += 1
        self._next.set()
        self._next = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        """Follow new blocks until ``stopping`` is set; then wake the waiters one last time."""
        follower = asyncio.create_task(self._follow()) if self.ws_url else None
        try:
            await stopping.wait()
        finally:
            if follower is not None:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
            self.connected = False
            self.number = None
            self.wake()

    async def _follow(self) -> None:
        assert self.ws_url is not None
        failures = 0
        while True:
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
            await ws.send(
                json.dumps(
                    {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
                )
            )
            reply = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT_SECONDS))
            if not isinstance(reply, dict) or "result" not in reply:
                raise ValueError(f"the chain refused the newHeads subscription: {reply!r:.200}")
            self.connected = True
            log.info("Following new blocks at %s.", url)
            self.wake()  # blocks may have come while there was no subscription: look now
            async for message in ws:
                self.number = _block_number(message) or self.number
                self.wake()


def _block_number(message: str | bytes) -> int | None:
    """The block number of a ``newHeads`` notification; None for anything else."""
    try:
        number = json.loads(message)["params"]["result"]["number"]
        return int(number, 16) if isinstance(number, str) else None
    except (ValueError, KeyError, TypeError):
        return None
