"""Which chain logs wake a node: the union of what its roles follow (``wake_filter``)."""

from __future__ import annotations

from eth_utils import event_abi_to_log_topic

from allmende.chain.compile import compile_contracts
from allmende.chain.deployment import ContractInfo, Deployment
from allmende.node.process import wake_filter
from allmende.node.roles.aggregator import AggregatorRole
from allmende.node.roles.settings import AggregatorSection, TrainerSection
from allmende.node.roles.trainer import TrainerRole

REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
JOBS = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"


def deployment() -> Deployment:
    compiled = compile_contracts()
    return Deployment(
        chain_id=31337,
        rpc_url="http://127.0.0.1:8545",
        deploy_block=1,
        registry=ContractInfo(address=REGISTRY, abi=compiled["Registry"].abi),
        jobs=ContractInfo(address=JOBS, abi=compiled["Jobs"].abi),
    )


def topic(chain: Deployment, name: str) -> bytes:
    abi = next(i for i in chain.jobs.abi if i.get("type") == "event" and i["name"] == name)
    return bytes(event_abi_to_log_topic(abi))


def trainer() -> TrainerRole:
    return TrainerRole(TrainerSection(dataset={"num_parts": 2, "part": 0}))


def test_a_trainer_wakes_only_for_the_events_it_acts_on() -> None:
    chain = deployment()
    wake = wake_filter(chain, [trainer()])
    assert wake is not None and wake.addresses == (JOBS,)
    wanted = {"JobCreated", "Joined", "RoundFinalized", "JobFinished", "JobCancelled"}
    assert set(wake.topics or ()) == {topic(chain, name) for name in wanted}
    assert topic(chain, "UpdateCommitted") not in (wake.topics or ())


def test_an_aggregator_wakes_for_every_jobs_log_and_so_does_a_node_with_both_roles() -> None:
    chain = deployment()
    aggregator = AggregatorRole(AggregatorSection())
    assert wake_filter(chain, [aggregator]) == wake_filter(chain, [trainer(), aggregator])
    both = wake_filter(chain, [trainer(), aggregator])
    assert both is not None and both.addresses == (JOBS,) and both.topics is None


def test_without_roles_or_with_a_role_that_does_not_say_every_block_wakes() -> None:
    class Quiet:
        name = "quiet"

        async def run(self, ctx: object) -> None:
            return None

    chain = deployment()
    assert wake_filter(chain, []) is None
    assert wake_filter(chain, [trainer(), Quiet()]) is None
