"""Deploy Registry and Jobs, make Jobs the Registry's first slasher, and describe the result as a
Deployment.

The same three transactions deploy to any EVM chain (``allmende contracts deploy``) and to the
devnet (``allmende devnet up``); the contracts' settings come from a TOML file
(:func:`load_contract_settings`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from allmende.chain.client import GAS_MARGIN, ChainClient, constructor_arguments
from allmende.chain.compile import CompiledContract, compile_contracts
from allmende.chain.deployment import ContractInfo, Deployment
from allmende.chain.registry import Registry
from allmende.errors import ConfigError

DEFAULT_MIN_STAKE = 10**18  # 1 ether
DEFAULT_UNBOND_DELAY = 3600  # seconds
DEFAULT_AGGREGATOR_SHARE_BPS = 2_000  # 20 % of each round's reward
DEFAULT_SLASH_AMOUNT = 10**17  # 0.1 ether
DEFAULT_ADMIN_DELAY = 2 * 24 * 3600  # seconds before a change of slasher takes effect
DEFAULT_CHALLENGE_WINDOW = 3600  # seconds a job's stake stays locked after it ends
# Gas of the third transaction (set_first_slasher), which cannot be estimated before the
# Registry exists: about 50k on the chains measured here, so this bounds it with room.
SET_SLASHER_GAS = 100_000
PLACEHOLDER_ADDRESS = "0x000000000000000000000000000000000000dEaD"  # for estimating Jobs' gas


class ContractSettings(BaseModel):
    """Constructor arguments of the contracts; every node of a network sees the same values.

    ``min_stake``: wei a node must stake to be active; raise it when cheap identities flood a job.
    ``unbond_delay``: seconds before unbonded stake can leave; must exceed the time a dispute takes.
    ``aggregator_share_bps``: aggregators' share of each round's reward, in basis points.
    ``slash_amount``: wei slashed from an aggregator whose model was wrong for the inputs it
    named (taken from what it locked for the job).
    ``admin_delay``: seconds between proposing a change of slasher and applying it.
    ``challenge_window``: seconds a job's participants keep their stake locked after it ends;
    also how long its shares can be claimed (the last round's claims come after the end, so a
    window of 0 leaves them to the owner's refund).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_stake: Annotated[int, Field(ge=0)] = DEFAULT_MIN_STAKE
    unbond_delay: Annotated[int, Field(ge=0)] = DEFAULT_UNBOND_DELAY
    aggregator_share_bps: Annotated[int, Field(ge=0, le=10_000)] = DEFAULT_AGGREGATOR_SHARE_BPS
    slash_amount: Annotated[int, Field(ge=0)] = DEFAULT_SLASH_AMOUNT
    admin_delay: Annotated[int, Field(ge=0)] = DEFAULT_ADMIN_DELAY
    challenge_window: Annotated[int, Field(ge=0)] = DEFAULT_CHALLENGE_WINDOW


def load_contract_settings(path: Path) -> ContractSettings:
    """Read a TOML file of :class:`ContractSettings` keys (any left out keep their defaults);
    :class:`ConfigError` in one line names the file and the bad key."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"No contract settings file at {path}; pass the right path.") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"The contract settings file {path} is not valid TOML: {exc}.") from None
    try:
        return ContractSettings.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        known = ", ".join(ContractSettings.model_fields)
        if error["type"] == "extra_forbidden":
            raise ConfigError(
                f"The contract settings file {path} has an unknown key {where!r}; the keys are "
                f"{known}."
            ) from None
        raise ConfigError(
            f"The contract settings file {path} is invalid at {where}: {error['msg']}; fix it "
            "and retry."
        ) from None


def deployment_gas(client: ChainClient, settings: ContractSettings) -> int:
    """Gas the three deployment transactions need at most (estimated, with the client's
    margin), for checking that the deployer can pay before anything is sent."""
    compiled = compile_contracts()

    def creation(contract: CompiledContract, *args: object) -> int:
        data = contract.bytecode.removeprefix("0x") + constructor_arguments(contract, args).hex()
        call = {"from": client.address, "data": "0x" + data}
        return int(client.request("eth_estimateGas", [call], label=f"{contract.name} constructor"),
                   16)  # fmt: skip

    registry = creation(compiled["Registry"], settings.min_stake, settings.unbond_delay,
                        settings.admin_delay)  # fmt: skip
    jobs = creation(compiled["Jobs"], PLACEHOLDER_ADDRESS, settings.aggregator_share_bps,
                    settings.slash_amount, settings.challenge_window)  # fmt: skip
    return int((registry + jobs) * GAS_MARGIN) + SET_SLASHER_GAS


def deploy_contracts(client: ChainClient, settings: ContractSettings) -> Deployment:
    """Deploy both contracts from ``client``'s account (which becomes the Registry admin)."""
    compiled = compile_contracts()
    deploy_block = client.block_number() + 1
    registry_address, _ = client.deploy(
        compiled["Registry"], settings.min_stake, settings.unbond_delay, settings.admin_delay
    )
    jobs_address, _ = client.deploy(
        compiled["Jobs"],
        registry_address,
        settings.aggregator_share_bps,
        settings.slash_amount,
        settings.challenge_window,
    )
    registry = ContractInfo(address=registry_address, abi=compiled["Registry"].abi)
    jobs = ContractInfo(address=jobs_address, abi=compiled["Jobs"].abi)
    Registry(client, registry).set_first_slasher(jobs_address)
    return Deployment(
        chain_id=client.chain_id,
        rpc_url=client.rpc_url,
        deploy_block=deploy_block,
        registry=registry,
        jobs=jobs,
    )


def deployment_is_live(client: ChainClient, deployment: Deployment) -> bool:
    """True when the chain is the one the file names and both contracts have code on it."""
    return (
        client.chain_id == deployment.chain_id
        and client.has_code(deployment.registry.address)
        and client.has_code(deployment.jobs.address)
    )
