"""HeadWatcher against a small websocket server that speaks the newHeads subscription."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from allmende.chain import heads as heads_module
from allmende.chain.heads import HeadWatcher, LogFilter, websocket_url

Handler = Callable[[ServerConnection], Awaitable[None]]


@pytest.mark.parametrize(
    ("rpc", "ws"),
    [
        ("http://127.0.0.1:8545", "ws://127.0.0.1:8545"),
        ("https://rpc.example.org/v1/key", "wss://rpc.example.org/v1/key"),
        ("ws://host:1", "ws://host:1"),
        ("ipc:///tmp/geth.ipc", None),
    ],
)
def test_websocket_url_swaps_the_scheme(rpc: str, ws: str | None) -> None:
    assert websocket_url(rpc) == ws


async def _subscribing(
    ws: ServerConnection, announce: asyncio.Queue[str], params: list[Any] | None = None
) -> None:
    request = json.loads(await ws.recv())
    assert request["method"] == "eth_subscribe" and request["params"] == (params or ["newHeads"])
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0x1"}))
    closed = asyncio.ensure_future(ws.wait_closed())
    while True:
        message = asyncio.ensure_future(announce.get())
        await asyncio.wait({message, closed}, return_when=asyncio.FIRST_COMPLETED)
        if closed.done():
            message.cancel()
            return
        await ws.send(message.result())


async def _with_server(handler: Handler, body: Callable[[str], Awaitable[None]]) -> None:
    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        await body(f"ws://127.0.0.1:{port}")


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_each_notification_wakes_a_waiting_role_at_once() -> None:
    async def scenario() -> None:
        announce: asyncio.Queue[str] = asyncio.Queue()

        async def body(url: str) -> None:
            watcher = HeadWatcher(url)
            stopping = asyncio.Event()
            runner = asyncio.create_task(watcher.run(stopping))
            await _until(lambda: watcher.connected)
            seen = watcher.seq
            waiter = asyncio.create_task(watcher.wait(seen, timeout=30))
            await asyncio.sleep(0.05)
            assert not waiter.done()  # nothing announced yet
            await announce.put('{"jsonrpc":"2.0","method":"eth_subscription","params":{}}')
            await asyncio.wait_for(waiter, 5)  # long before the waiter's own 30 s
            assert watcher.seq == seen + 1
            assert watcher.number is None  # that notification named no block
            head = {"params": {"subscription": "0x1", "result": {"number": "0x2a"}}}
            await announce.put(json.dumps(head))
            await _until(lambda: watcher.seq == seen + 2)
            assert watcher.number == 42
            await announce.put("not json at all")  # still a wake-up, the number stays
            await _until(lambda: watcher.seq == seen + 3)
            assert watcher.number == 42
            stopping.set()
            await asyncio.wait_for(runner, 5)
            assert not watcher.connected and watcher.number is None

        await _with_server(lambda ws: _subscribing(ws, announce), body)

    asyncio.run(scenario())


def test_with_a_log_filter_it_subscribes_to_those_logs_and_takes_their_block() -> None:
    jobs = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
    topics = (b"\x01" * 32, b"\x02" * 32)
    expected = ["logs", {"address": [jobs], "topics": [["0x" + "01" * 32, "0x" + "02" * 32]]}]

    async def scenario() -> None:
        announce: asyncio.Queue[str] = asyncio.Queue()

        async def body(url: str) -> None:
            watcher = HeadWatcher(url)
            watcher.watch_logs(LogFilter(addresses=(jobs,), topics=topics))
            stopping = asyncio.Event()
            runner = asyncio.create_task(watcher.run(stopping))
            await _until(lambda: watcher.connected)
            seen = watcher.seq
            for block in ("0x10", "0x10", "0xf"):  # two logs of block 16, a late one of 15
                log = {"params": {"result": {"address": jobs, "blockNumber": block}}}
                await announce.put(json.dumps(log))
            await _until(lambda: watcher.seq == seen + 3)
            assert watcher.number == 16  # the newest block known to hold such a log
            stopping.set()
            await asyncio.wait_for(runner, 5)

        await _with_server(lambda ws: _subscribing(ws, announce, expected), body)

    asyncio.run(scenario())
    every = LogFilter(addresses=(jobs,)).subscription()
    assert every == ["logs", {"address": [jobs]}]  # no topics: every log of the contract


def test_a_block_announced_during_a_poll_is_not_slept_through() -> None:
    async def scenario() -> None:
        watcher = HeadWatcher(None)
        seen = watcher.seq
        watcher.wake()  # a block arrives while the role polls
        waiting = watcher.wait(seen, timeout=30)
        with pytest.raises(StopIteration):  # it returns at its first step, never suspending
            waiting.send(None)
        still = watcher.wait(watcher.seq, timeout=30)
        assert still.send(None) is not None  # nothing new since: this one does suspend
        still.close()

    asyncio.run(scenario())


def test_without_a_websocket_wait_times_out_and_stopping_wakes() -> None:
    async def scenario() -> None:
        watcher = HeadWatcher(None)
        start = time.monotonic()
        await watcher.wait(watcher.seq, timeout=0.2)
        assert time.monotonic() - start >= 0.2
        stopping = asyncio.Event()
        runner = asyncio.create_task(watcher.run(stopping))
        waiter = asyncio.create_task(watcher.wait(watcher.seq, timeout=30))
        await asyncio.sleep(0)  # one turn of the loop: both tasks now wait
        assert not waiter.done()
        stopping.set()
        await asyncio.wait_for(asyncio.gather(runner, waiter), 5)  # long before the 30 s

    asyncio.run(scenario())


def test_a_refused_subscription_or_dead_endpoint_leaves_polling_and_retries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(heads_module, "RETRY_SECONDS", (0.05,))
    attempts: list[int] = []

    async def refuse(ws: ServerConnection) -> None:
        attempts.append(1)
        request = json.loads(await ws.recv())
        await ws.send(json.dumps({"id": request["id"], "error": {"message": "no subscriptions"}}))

    async def body(url: str) -> None:
        watcher = HeadWatcher(url)
        stopping = asyncio.Event()
        runner = asyncio.create_task(watcher.run(stopping))
        await _until(lambda: len(attempts) >= 3)
        assert not watcher.connected
        stopping.set()
        await asyncio.wait_for(runner, 5)

    caplog.set_level("INFO", logger="allmende.chain.heads")
    asyncio.run(_with_server(refuse, body))
    said = [r.getMessage() for r in caplog.records]
    assert sum("No new-block notifications" in line for line in said) == 1  # said once
    assert "refused the newHeads subscription" in said[0]

    dead_attempts: list[int] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dead_attempts.append(1)  # a dead endpoint: accepts, then closes before any handshake
        writer.close()

    async def dead() -> None:
        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        watcher = HeadWatcher(f"ws://127.0.0.1:{port}")
        stopping = asyncio.Event()
        runner = asyncio.create_task(watcher.run(stopping))
        await _until(lambda: len(dead_attempts) >= 3)  # it keeps retrying
        assert not watcher.connected and not runner.done()
        stopping.set()
        await asyncio.wait_for(runner, 5)
        server.close()

    caplog.clear()
    asyncio.run(dead())
    said = [r.getMessage() for r in caplog.records]
    assert sum("No new-block notifications" in line for line in said) == 1
