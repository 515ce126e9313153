"""Blob transfer between two real nodes on loopback, against hashlib over the same bytes in memory.

Starts two ``allmende node run`` processes in offline mode (no chain: the data plane alone), puts
a random blob into node A's store, and fetches it into node B's store with the peer client —
streamed, hashed while received, written to a temporary file and renamed — the same path a node's
roles use. Prints each fetch's MB/s next to ``hashlib.sha256``'s MB/s over the same bytes just
before it, and the median of their ratios (goal: >= 40 %), and writes them with a description of
the machine to ``benchmarks/results/blobs.json``.

    .venv/bin/python benchmarks/blobs.py [--mb 256] [--repeats 5] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from allmende.net.client import PeerClient
from allmende.net.endpoints import LOOPBACK_RANGES, EndpointPolicy
from allmende.store.blobs import BlobStore
from machine import describe_machine

GOAL_RATIO = 0.40
START_TIMEOUT = 180.0
MB = 1024 * 1024
RESULT = Path(__file__).resolve().parent / "results" / "blobs.json"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "allmende.cli.main", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def offline_node(home: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Init and run an offline node; yield its URL and process; SIGTERM it afterwards."""
    port = _free_port()
    _cli("node", "init", str(home), "--offline", "--insecure-plaintext-key", "--port", str(port))
    with open(home / "node.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "allmende.cli.main", "node", "run", str(home)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node {home} did not start; see {home / 'node.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield url, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def hashlib_rate(data: bytes) -> float:
    """MB/s of one ``hashlib.sha256`` pass over ``data`` in memory (best of three)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        hashlib.sha256(data).hexdigest()
        best = min(best, time.perf_counter() - start)
    return len(data) / MB / best


async def fetch_rate(store: BlobStore, digest: str, url: str, size: int) -> float:
    """MB/s of one verified fetch of ``digest`` from ``url`` into ``store``."""
    async with PeerClient(store, policy=EndpointPolicy.allowing(LOOPBACK_RANGES)) as client:
        start = time.perf_counter()
        result = await client.fetch_blob(digest, [url])
        elapsed = time.perf_counter() - start
    if result.peer != url or result.size != size:
        raise RuntimeError(f"unexpected fetch result {result}")
    return size / MB / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256, help="blob size in MiB")
    parser.add_argument("--repeats", type=int, default=5,
                        help="fetches, each paired with a hashlib pass; the median ratio counts")
    parser.add_argument("--out", type=Path, default=RESULT, help="where the figures are written")
    args = parser.parse_args(argv)
    data = os.urandom(args.mb * MB)
    digest = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory(prefix="allmende-bench-blobs-") as tmp:
        root = Path(tmp)
        with offline_node(root / "a") as (url_a, _), offline_node(root / "b"):
            BlobStore(root / "a" / "blobs").put_bytes(data)
            store_b = BlobStore(root / "b" / "blobs")
            fetches, hashings = [], []
            for _ in range(args.repeats):  # a shared machine's speed drifts: pair each fetch
                store_b.delete(digest)  # with a hashlib pass just before it
                hashings.append(hashlib_rate(data))
                fetches.append(asyncio.run(fetch_rate(store_b, digest, url_a, len(data))))
            assert store_b.verify(digest)
    ratios = [fetch / hashing for fetch, hashing in zip(fetches, hashings, strict=True)]
    ratio = statistics.median(ratios)
    print(f"blob size            {args.mb} MiB")
    print("hashlib.sha256       " + ", ".join(f"{r:.0f}" for r in hashings) + " MB/s (in memory)")
    print("node-to-node fetch   " + ", ".join(f"{r:.0f}" for r in fetches) + " MB/s")
    print("ratio                " + ", ".join(f"{r:.1%}" for r in ratios)
          + f"; median {ratio:.1%} (goal >= {GOAL_RATIO:.0%})")
    result = {
        "machine": describe_machine(), "blob_mib": args.mb,
        "hashlib_mb_s": [round(r, 1) for r in hashings],
        "fetch_mb_s": [round(r, 1) for r in fetches], "ratios": [round(r, 4) for r in ratios],
        "ratio": round(ratio, 4), "goal_ratio": GOAL_RATIO,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"written to {args.out}")
    return 0 if ratio >= GOAL_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
