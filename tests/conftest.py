"""Shared fixtures: a real Anvil devnet with the contracts deployed, torn down however tests end.

The ``devnet`` fixture is session-scoped: one chain for the whole run. Tests that need clean
accounts take them from :meth:`DevnetHandle.new_key` (a fresh random key funded from the deployer)
instead of sharing the dev accounts' balances with other tests.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_account import Account

from allmende.chain import Contracts, Deployment, Devnet, DevnetConfig, dev_keys

NEW_KEY_BALANCE = 100 * 10**18  # wei given to every fresh test account


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kill_devnet_group(state_dir: Path) -> None:
    """SIGKILL the devnet of ``state_dir`` (its group and any Anvil on its state file) and wait."""
    Devnet(DevnetConfig(state_dir=state_dir)).down(timeout=0.0)


@dataclass
class DevnetHandle:
    """A running devnet: its deployment, RPC URL and funded dev keys (``keys[0]`` is admin)."""

    devnet: Devnet
    deployment: Deployment
    rpc_url: str
    keys: list[str]
    state_dir: Path
    _funder: Contracts | None = field(default=None, repr=False)

    def contracts(self, key: str | None = None) -> Contracts:
        """Bindings that send from ``key`` (read-only without one)."""
        return Contracts.connect(self.deployment, key)

    def new_key(self, balance: int = NEW_KEY_BALANCE) -> str:
        """A fresh random account funded with ``balance`` wei by the deployer; its private key."""
        if self._funder is None:
            self._funder = self.contracts(self.keys[0])
        key = Account.create().key.to_0x_hex()
        self._funder.client.send_value(Account.from_key(key).address, balance)
        return key


@pytest.fixture(scope="session")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetHandle]:
    """Anvil on a free port in a temp dir with Registry and Jobs deployed; killed at the end."""
    state_dir = tmp_path_factory.mktemp("devnet")
    net = Devnet(DevnetConfig(state_dir=state_dir, port=free_port()))
    try:
        deployment = net.up()
        yield DevnetHandle(
            devnet=net,
            deployment=deployment,
            rpc_url=deployment.rpc_url,
            keys=dev_keys(net.config.accounts),
            state_dir=state_dir,
        )
    finally:
        try:
            net.down(timeout=5.0)
        finally:
            kill_devnet_group(state_dir)


@dataclass(frozen=True)
class DevnetSlot:
    """A state directory and a free port for a devnet a test starts itself (e.g. via the CLI)."""

    state_dir: Path
    port: int


@pytest.fixture
def devnet_slot(tmp_path: Path) -> Iterator[DevnetSlot]:
    """Where a test may start its own devnet; whatever runs there is killed afterwards."""
    slot = DevnetSlot(state_dir=tmp_path / "devnet", port=free_port())
    try:
        yield slot
    finally:
        kill_devnet_group(slot.state_dir)


@pytest.fixture
def boa_anchor() -> Iterator[None]:
    """Roll titanoboa's chain back after the test, and its record of written storage too.

    ``boa.env.anchor()`` restores the chain but not the record of which storage slots were
    written, and the next test deploys its contracts at the same addresses: a revert would then
    decode one contract's slots with another contract's layout and fail in the error message.
    """
    import boa  # only the tests that use titanoboa pay for importing it

    written = {account: set(slots) for account, slots in boa.env.sstore_trace.items()}
    with boa.env.anchor():
        yield
    boa.env.sstore_trace = written
