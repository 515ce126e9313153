"""One handle on a deployment: a client with a key, both bindings, events and an event stream."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from allmende.chain.client import DEFAULT_RECEIPT_TIMEOUT, DEFAULT_RPC_TIMEOUT, ChainClient, Receipt
from allmende.chain.deployment import Deployment
from allmende.chain.events import ChainEvent, EventDecoder
from allmende.chain.jobs import Jobs
from allmende.chain.registry import Registry
from allmende.chain.stream import DEFAULT_CHUNK_BLOCKS, DEFAULT_POLL_INTERVAL, EventStream
from allmende.errors import ChainError


def require_code(client: ChainClient, deployment: Deployment) -> None:
    """:class:`ChainError` unless both contracts of ``deployment`` have code on the chain.

    A dev chain that keeps no state (Hardhat's network, Anvil without ``--state``) forgets the
    contracts when it restarts, and many dev chains share an id (1337, 31337): the chain id
    alone does not show that the file describes this chain.
    """
    for name, info in (("Registry", deployment.registry), ("Jobs", deployment.jobs)):
        if not client.has_code(info.address):
            raise ChainError(
                f"The chain at {client.rpc_url} (id {client.chain_id}) has no {name} contract at "
                f"{info.address}, where the deployment file says it is: the chain was reset or the "
                "file is for another chain; deploy again with `allmende contracts deploy` (or "
                "`allmende devnet up`) and use the new deployment file."
            )


@dataclass(frozen=True)
class Contracts:
    """``Registry`` and ``Jobs`` of one deployment, reached through one client."""

    deployment: Deployment
    client: ChainClient
    registry: Registry
    jobs: Jobs
    decoder: EventDecoder

    @classmethod
    def connect(
        cls,
        deployment: Deployment,
        private_key: str | None = None,
        *,
        rpc_url: str | None = None,
        timeout: float = DEFAULT_RPC_TIMEOUT,
        receipt_timeout: float = DEFAULT_RECEIPT_TIMEOUT,
        check_chain: bool = True,
    ) -> Contracts:
        """Bind to ``deployment`` (at ``rpc_url`` if given, else the file's URL).

        With ``check_chain`` the chain id must match the deployment file's, so a key never signs
        for the wrong chain.
        """
        client = ChainClient(
            rpc_url or deployment.rpc_url,
            private_key,
            timeout=timeout,
            receipt_timeout=receipt_timeout,
        )
        if check_chain:
            if client.chain_id != deployment.chain_id:
                raise ChainError(
                    f"The chain at {client.rpc_url} has id {client.chain_id}, but the deployment "
                    f"file is for chain {deployment.chain_id}; point at the right RPC URL."
                )
            require_code(client, deployment)
        return cls(
            deployment=deployment,
            client=client,
            registry=Registry(client, deployment.registry),
            jobs=Jobs(client, deployment.jobs),
            decoder=EventDecoder.for_deployment(deployment),
        )

    def events(self, receipt: Receipt) -> list[ChainEvent]:
        """Typed events of both contracts in one transaction, in log order."""
        return self.decoder.decode_all(receipt.logs)

    def event_stream(
        self,
        *,
        from_block: int | None = None,
        cursor_file: Path | None = None,
        chunk_blocks: int = DEFAULT_CHUNK_BLOCKS,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> EventStream:
        """A stream of both contracts' events, from the deploy block unless told otherwise."""
        return EventStream(
            self.client,
            self.decoder,
            from_block=self.deployment.deploy_block if from_block is None else from_block,
            cursor_file=cursor_file,
            chunk_blocks=chunk_blocks,
            poll_interval=poll_interval,
        )
