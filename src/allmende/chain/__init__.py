"""The control plane: contract compilation and deployment, typed bindings, the Anvil devnet."""

from __future__ import annotations

from allmende.chain._binding import to_bytes32
from allmende.chain.accounts import DEVNET_MNEMONIC, dev_account, dev_keys
from allmende.chain.client import ChainClient, Receipt, decode_revert
from allmende.chain.compile import CompiledContract, compile_contracts
from allmende.chain.contracts import Contracts
from allmende.chain.deploy import ContractSettings, deploy_contracts
from allmende.chain.deployment import ContractInfo, Deployment
from allmende.chain.devnet import Devnet, DevnetConfig, DevnetStatus, advance_time, find_anvil
from allmende.chain.events import ChainEvent, EventDecoder
from allmende.chain.jobs import Commit, Job, Jobs, JobStatus, RoundResult, vote_key
from allmende.chain.registry import (
    ROLE_AGGREGATOR,
    ROLE_PROVIDER,
    ROLE_TRAINER,
    ROLE_VERIFIER,
    Node,
    Registry,
)
from allmende.chain.stream import EventStream

__all__ = [
    "DEVNET_MNEMONIC",
    "ROLE_AGGREGATOR",
    "ROLE_PROVIDER",
    "ROLE_TRAINER",
    "ROLE_VERIFIER",
    "ChainClient",
    "ChainEvent",
    "Commit",
    "CompiledContract",
    "ContractInfo",
    "ContractSettings",
    "Contracts",
    "Deployment",
    "Devnet",
    "DevnetConfig",
    "DevnetStatus",
    "EventDecoder",
    "EventStream",
    "Job",
    "JobStatus",
    "Jobs",
    "Node",
    "Receipt",
    "Registry",
    "RoundResult",
    "advance_time",
    "compile_contracts",
    "decode_revert",
    "deploy_contracts",
    "dev_account",
    "dev_keys",
    "find_anvil",
    "to_bytes32",
    "vote_key",
]
