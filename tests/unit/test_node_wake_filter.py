"""Which chain logs wake a node: the union of what its roles follow (``wake_filter``)."""

from __future__ import annotations

from eth_utils import event_abi_to_log_topic

from allmende.chain.deployment import Deployment
from allmende.node.config import AggregatorSection, TrainerSection
from allmende.node.process import wake_filter
from allmende.node.roles.aggregator import AggregatorRole
from allmende.node.roles.trainer import TrainerRole

JOBS = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"  # the address of the events tests' deployment


def topic(chain: Deployment, name: str) -> bytes:
    abi = next(i for i in chain.jobs.abi if i.get("type") == "event" and i["name"] == name)
    return bytes(event_abi_to_log_topic(abi))


def trainer() -> TrainerRole:
    return TrainerRole(
        TrainerSection(allowed_tasks=["digits-mlp"], dataset={"num_parts": 2, "part": 0})
    )


def test_a_trainer_wakes_only_for_the_events_it_acts_on(deployment: Deployment) -> None:
    chain = deployment
    wake = wake_filter(chain, [trainer()])
    assert wake is not None and wake.addresses == (JOBS,)
    wanted = {
        "JobCreated", "Joined", "CommitteeSealed", "RoundFinalized", "RoundReopened",
        "TrainerEvicted", "JobFinished", "JobCancelled",
    }  # fmt: skip
    assert set(wake.topics or ()) == {topic(chain, name) for name in wanted}
    assert topic(chain, "UpdateCommitted") not in (wake.topics or ())


def test_an_aggregator_wakes_for_every_jobs_log_and_so_does_a_node_with_both_roles(
    deployment: Deployment,
) -> None:
    chain = deployment
    aggregator = AggregatorRole(AggregatorSection())
    assert wake_filter(chain, [aggregator]) == wake_filter(chain, [trainer(), aggregator])
    both = wake_filter(chain, [trainer(), aggregator])
    assert both is not None and both.addresses == (JOBS,) and both.topics is None


def test_without_roles_or_with_a_role_that_does_not_say_every_block_wakes(
    deployment: Deployment,
) -> None:
    class Quiet:
        name = "quiet"

        async def run(self, ctx: object) -> None:
            return None

    chain = deployment
    assert wake_filter(chain, []) is None
    assert wake_filter(chain, [trainer(), Quiet()]) is None
