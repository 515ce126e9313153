"""What one chain call costs a node: web3's path against the node's own, on a real Anvil.

Starts a devnet, then times (mean of ``--calls`` after one warm-up call, in one thread):

- ``eth_blockNumber`` through web3's provider, and through :meth:`ChainClient.request`;
- the ``Registry.nodes`` view through a web3 contract object, and through the node's binding;
- a plain transfer with :meth:`ChainClient.send_value` (estimate, fees, nonce, sign, send,
  receipt).

    .venv/bin/python benchmarks/chain_calls.py [--calls 50]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from eth_account import Account

from allmende.chain import Contracts, Devnet, DevnetConfig, dev_keys


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mean_ms(call: Callable[[], object], calls: int) -> float:
    """Mean wall milliseconds of ``call`` over ``calls`` runs, after one untimed run."""
    call()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50, help="timed calls of each kind")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="allmende-bench-chain-") as tmp:
        devnet = Devnet(DevnetConfig(state_dir=Path(tmp), port=_free_port()))
        deployment = devnet.up()
        try:
            contracts = Contracts.connect(deployment, dev_keys(2)[1])
            client = contracts.client
            me = client.address
            registry = client.contract(deployment.registry)
            receiver = Account.create().address
            rows = [
                ("eth_blockNumber, web3 provider",
                 lambda: client.w3.provider.make_request("eth_blockNumber", [])),  # type: ignore[arg-type]
                ("eth_blockNumber, ChainClient.request",
                 lambda: client.request("eth_blockNumber", [])),
                ("Registry.nodes view, web3 contract", lambda: registry.functions.nodes(me).call()),
                ("Registry.nodes view, node binding", lambda: contracts.registry.node(me)),
                ("transaction (send_value)", lambda: client.send_value(receiver, 1)),
            ]  # fmt: skip
            for label, call in rows:
                print(f"{label:40s} {mean_ms(call, args.calls):7.2f} ms")
        finally:
            devnet.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
