"""Typed binding of ``contracts/Registry.vy``: membership, stake, slashing credits."""

from __future__ import annotations

from dataclasses import dataclass

from allmende.chain._binding import ContractBinding, to_bytes32
from allmende.chain.client import Receipt
from allmende.chain.deployment import ContractInfo
from allmende.chain.events import EventDecoder

NO_METADATA = bytes(32)


@dataclass(frozen=True)
class Node:
    """A node's registry record (``Registry.nodes(addr)``); amounts in wei, times in seconds."""

    endpoint: str
    roles: int
    metadata: bytes
    stake: int
    unbonding: int
    unbond_available_at: int
    registered: bool


class Registry(ContractBinding):
    """Every function of the Registry; transactions are sent from the client's key."""

    @staticmethod
    def _make_decoder(info: ContractInfo) -> EventDecoder:
        return EventDecoder(registry=info)

    # -- transactions --------------------------------------------------------------------------

    def register(self, endpoint: str, roles: int, metadata: bytes | str = NO_METADATA) -> Receipt:
        """Register the caller (or update its endpoint, roles and metadata)."""
        return self._send("register", endpoint, roles, to_bytes32(metadata))

    def stake(self, amount: int) -> Receipt:
        """Add ``amount`` wei to the caller's stake (the caller must be registered)."""
        return self._send("stake", value=amount)

    def request_unbond(self, amount: int) -> Receipt:
        return self._send("request_unbond", amount)

    def withdraw_unbonded(self) -> Receipt:
        return self._send("withdraw_unbonded")

    def set_first_slasher(self, account: str) -> Receipt:
        """Authorize the first slasher (the Jobs contract), once, at deployment; every later
        change goes through :meth:`propose_slasher` and its timelock."""
        return self._send("set_first_slasher", account)

    def propose_slasher(self, account: str, allowed: bool) -> Receipt:
        return self._send("propose_slasher", account, allowed)

    def apply_slasher(self, account: str) -> Receipt:
        return self._send("apply_slasher", account)

    def transfer_admin(self, new_admin: str) -> Receipt:
        return self._send("transfer_admin", new_admin)

    def accept_admin(self) -> Receipt:
        return self._send("accept_admin")

    def slash(self, node: str, job_id: int, amount: int, beneficiary: str) -> Receipt:
        return self._send("slash", node, job_id, amount, beneficiary)

    def withdraw(self) -> Receipt:
        """Pay out what slashing credited to the caller."""
        return self._send("withdraw")

    # -- views ---------------------------------------------------------------------------------

    def admin(self) -> str:
        return str(self._call("admin"))

    def min_stake(self) -> int:
        return int(self._call("min_stake"))

    def unbond_delay(self) -> int:
        return int(self._call("unbond_delay"))

    def node(self, address: str) -> Node:
        return self._record(Node, "nodes", address)

    def is_active(self, address: str) -> bool:
        return bool(self._call("is_active", address))

    def has_role(self, address: str, role: int) -> bool:
        return bool(self._call("has_role", address, role))

    def is_slasher(self, address: str) -> bool:
        return bool(self._call("slashers", address))

    def locked(self, address: str) -> int:
        """Wei of the node's stake locked by its jobs (it cannot be unbonded)."""
        return int(self._call("locked", address))

    def lock_of(self, slasher: str, job_id: int, address: str) -> int:
        """Wei the node locked for job ``job_id`` of the contract ``slasher``."""
        return int(self._call("lock_of", slasher, job_id, address))

    def free_stake(self, address: str) -> int:
        return int(self._call("free_stake", address))

    def owed(self, address: str) -> int:
        return int(self._call("owed", address))

    def node_count(self) -> int:
        return int(self._call("node_count"))

    def node_at(self, index: int) -> str:
        return str(self._call("node_at", index))

    def node_addresses(self) -> list[str]:
        """Every registered node's address, in registration order."""
        return [self.node_at(i) for i in range(self.node_count())]
