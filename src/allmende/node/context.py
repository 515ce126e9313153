"""What a running node hands its role services: :class:`NodeContext` and :class:`RoleService`.

The node process (:mod:`allmende.node.process`) builds one :class:`NodeContext` from its home,
config and key, and starts each :class:`RoleService` with it; roles and the control socket read
the context and never reach back into the process. :func:`on_chain` runs a blocking chain call
off the event loop, so the node's API keeps serving while a transaction is mined.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from allmende.errors import NodeError

if TYPE_CHECKING:
    from allmende.chain import ChainClient, Deployment, Jobs, Registry
    from allmende.chain.heads import HeadWatcher
    from allmende.chain.keys import LocalKey
    from allmende.net.api import MessageRouter
    from allmende.net.client import PeerClient
    from allmende.net.messages import MessageDomain
    from allmende.net.metrics import NodeMetrics
    from allmende.node.config import NodeConfig
    from allmende.store.blobs import BlobStore
    from allmende.store.state import StateDB

T = TypeVar("T")


@dataclass
class NodeChain:
    """The node's view of the chain: a signing client and the contract bindings."""

    client: ChainClient
    deployment: Deployment
    registry: Registry
    jobs: Jobs
    heads: HeadWatcher


@dataclass
class NodeContext:
    """Everything a role service needs; built by :func:`allmende.node.process.open_node`."""

    home: Path
    config: NodeConfig
    account: LocalKey
    store: BlobStore
    state: StateDB
    metrics: NodeMetrics
    domain: MessageDomain
    router: MessageRouter
    chain: NodeChain | None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    peers: PeerClient | None = None  # created on the running event loop by serve()

    @property
    def address(self) -> str:
        """This node's checksummed address."""
        return str(self.account.address)

    def require_chain(self) -> NodeChain:
        """The node's chain; :class:`NodeError` for an offline node."""
        if self.chain is None:
            raise NodeError(
                "The trainer and aggregator roles need a chain; set [chain] deployment in "
                "node.toml (offline nodes can only serve blobs)."
            )
        return self.chain

    def require_peers(self) -> PeerClient:
        """The node's peer client; :class:`NodeError` before the node serves."""
        if self.peers is None:
            raise NodeError("The node's peer client exists only while the node serves.")
        return self.peers


class RoleService(Protocol):
    """A role (trainer, aggregator, ...) run inside the node process; while it has a ``ready``
    attribute that is False, ``/healthz`` says the node is not ready yet."""

    name: str

    async def run(self, ctx: NodeContext) -> None:
        """Do the role's work until ``ctx.stopping`` is set."""
        ...


async def on_chain(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking chain call in a worker thread, so the node's API keeps serving."""
    return await asyncio.to_thread(fn, *args)
