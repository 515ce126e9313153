"""The control plane: contract compilation and deployment, typed bindings, the Anvil devnet.

The names below are imported on first use (PEP 562): a command that needs only the deployment
file or a dev key does not pay for the ABI codec and the contract bindings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from allmende.chain.keys import LocalKey
    from allmende.chain.registry import Node, Registry
    from allmende.chain.roles import ROLE_AGGREGATOR, ROLE_PROVIDER, ROLE_TRAINER, ROLE_VERIFIER
    from allmende.chain.stream import EventStream

_MODULE_OF = {
    "to_bytes32": "_binding",
    "DEVNET_MNEMONIC": "accounts",
    "dev_account": "accounts",
    "dev_keys": "accounts",
    "ChainClient": "client",
    "Receipt": "client",
    "decode_revert": "client",
    "CompiledContract": "compile",
    "compile_contracts": "compile",
    "Contracts": "contracts",
    "ContractSettings": "deploy",
    "deploy_contracts": "deploy",
    "ContractInfo": "deployment",
    "Deployment": "deployment",
    "Devnet": "devnet",
    "DevnetConfig": "devnet",
    "DevnetStatus": "devnet",
    "advance_time": "devnet",
    "find_anvil": "devnet",
    "ChainEvent": "events",
    "EventDecoder": "events",
    "Commit": "jobs",
    "Job": "jobs",
    "JobStatus": "jobs",
    "Jobs": "jobs",
    "RoundResult": "jobs",
    "vote_key": "jobs",
    "LocalKey": "keys",
    "Node": "registry",
    "ROLE_AGGREGATOR": "roles",
    "ROLE_PROVIDER": "roles",
    "ROLE_TRAINER": "roles",
    "ROLE_VERIFIER": "roles",
    "Registry": "registry",
    "EventStream": "stream",
}

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
    "LocalKey",
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


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])
