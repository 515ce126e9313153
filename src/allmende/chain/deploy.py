"""Deploy Registry and Jobs, make Jobs the Registry's first slasher, and describe the result as a
Deployment."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from allmende.chain.client import ChainClient
from allmende.chain.compile import compile_contracts
from allmende.chain.deployment import ContractInfo, Deployment
from allmende.chain.registry import Registry

DEFAULT_MIN_STAKE = 10**18  # 1 ether
DEFAULT_UNBOND_DELAY = 3600  # seconds
DEFAULT_AGGREGATOR_SHARE_BPS = 2_000  # 20 % of each round's reward
DEFAULT_SLASH_AMOUNT = 10**17  # 0.1 ether
DEFAULT_ADMIN_DELAY = 2 * 24 * 3600  # seconds before a change of slasher takes effect
DEFAULT_CHALLENGE_WINDOW = 3600  # seconds a job's stake stays locked after it ends


class ContractSettings(BaseModel):
    """Constructor arguments of the contracts; every node of a network sees the same values.

    ``min_stake``: wei a node must stake to be active; raise it when cheap identities flood a job.
    ``unbond_delay``: seconds before unbonded stake can leave; must exceed the time a dispute takes.
    ``aggregator_share_bps``: aggregators' share of each round's reward, in basis points.
    ``slash_amount``: wei slashed from an aggregator whose model was wrong for the inputs it
    named (taken from what it locked for the job).
    ``admin_delay``: seconds between proposing a change of slasher and applying it.
    ``challenge_window``: seconds a job's participants keep their stake locked after it ends.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_stake: Annotated[int, Field(ge=0)] = DEFAULT_MIN_STAKE
    unbond_delay: Annotated[int, Field(ge=0)] = DEFAULT_UNBOND_DELAY
    aggregator_share_bps: Annotated[int, Field(ge=0, le=10_000)] = DEFAULT_AGGREGATOR_SHARE_BPS
    slash_amount: Annotated[int, Field(ge=0)] = DEFAULT_SLASH_AMOUNT
    admin_delay: Annotated[int, Field(ge=0)] = DEFAULT_ADMIN_DELAY
    challenge_window: Annotated[int, Field(ge=0)] = DEFAULT_CHALLENGE_WINDOW


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
