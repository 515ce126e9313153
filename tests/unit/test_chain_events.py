"""Raw logs of the real contract ABIs decode into typed, frozen event records."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import event_abi_to_log_topic

from allmende.chain.deployment import ContractInfo, Deployment
from allmende.chain.events import (
    JOBS_EVENTS,
    REGISTRY_EVENTS,
    EventDecoder,
    JobCreated,
    JobsWithdrawn,
    RegistryWithdrawn,
    RoundFinalized,
    Staked,
    UpdateCommitted,
)
from allmende.errors import ChainError

REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"  # as in the deployment fixture
JOBS = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
NODE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
TX = "0x" + "ab" * 32


def event_abi(info: ContractInfo, name: str) -> dict[str, Any]:
    return next(i for i in info.abi if i.get("type") == "event" and i["name"] == name)


def make_log(address: str, abi: dict[str, Any], values: dict[str, Any], **where: int) -> dict:
    indexed = [i for i in abi["inputs"] if i["indexed"]]
    plain = [i for i in abi["inputs"] if not i["indexed"]]
    topics = [event_abi_to_log_topic(abi)] + [
        encode([i["type"]], [values[i["name"]]]) for i in indexed
    ]
    data = encode([i["type"] for i in plain], [values[i["name"]] for i in plain])
    return {
        "address": address,
        "topics": topics,
        "data": data,
        "blockNumber": where.get("block", 7),
        "logIndex": where.get("index", 0),
        "transactionHash": bytes.fromhex(TX[2:]),
    }


def test_every_contract_event_has_a_record_with_matching_fields(deployment: Deployment) -> None:
    for info, records in ((deployment.registry, REGISTRY_EVENTS), (deployment.jobs, JOBS_EVENTS)):
        abi_events = {i["name"] for i in info.abi if i.get("type") == "event"}
        assert abi_events == set(records)
    EventDecoder.for_deployment(deployment)  # raises if any field list differs


def test_jobs_log_decodes_to_a_typed_frozen_record(deployment: Deployment) -> None:
    abi = event_abi(deployment.jobs, "UpdateCommitted")
    values = {
        "job_id": 3,
        "round": 1,
        "trainer": NODE.lower(),
        "update_hash": b"\x11" * 32,
        "weight": 9,
    }
    event = EventDecoder.for_deployment(deployment).decode(
        make_log(JOBS, abi, values, block=12, index=4)
    )
    assert event == UpdateCommitted(
        block_number=12,
        log_index=4,
        tx_hash=TX,
        address=JOBS,
        job_id=3,
        round=1,
        trainer=NODE,
        update_hash=b"\x11" * 32,
        weight=9,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.weight = 10  # type: ignore[misc]


def test_same_event_name_on_two_contracts_gives_two_record_types(deployment: Deployment) -> None:
    decoder = EventDecoder.for_deployment(deployment)
    values = {"account": NODE, "amount": 5}
    from_registry = decoder.decode(
        make_log(REGISTRY, event_abi(deployment.registry, "Withdrawn"), values)
    )
    from_jobs = decoder.decode(make_log(JOBS, event_abi(deployment.jobs, "Withdrawn"), values))
    assert isinstance(from_registry, RegistryWithdrawn)
    assert isinstance(from_jobs, JobsWithdrawn)


def test_logs_of_other_contracts_are_ignored(deployment: Deployment) -> None:
    abi = event_abi(deployment.registry, "Staked")
    log = make_log(NODE, abi, {"node": NODE, "amount": 1, "total": 1})
    assert EventDecoder.for_deployment(deployment).decode(log) is None
    assert EventDecoder.for_deployment(deployment).decode({**log, "topics": []}) is None


def test_a_decoder_for_some_events_names_their_topics_and_skips_the_rest(
    deployment: Deployment,
) -> None:
    wanted = EventDecoder(jobs=deployment.jobs, only=(JobCreated, RoundFinalized))
    assert wanted.topics == sorted(
        bytes(event_abi_to_log_topic(event_abi(deployment.jobs, name)))
        for name in ("JobCreated", "RoundFinalized")
    )
    commit = make_log(
        JOBS,
        event_abi(deployment.jobs, "UpdateCommitted"),
        {"job_id": 1, "round": 0, "trainer": NODE, "update_hash": b"\x11" * 32, "weight": 9},
    )
    assert wanted.decode(commit) is None
    assert isinstance(EventDecoder(jobs=deployment.jobs).decode(commit), UpdateCommitted)
    assert EventDecoder(jobs=deployment.jobs).topics is None  # every event: no topic filter


def test_decode_all_keeps_log_order(deployment: Deployment) -> None:
    abi = event_abi(deployment.registry, "Staked")
    logs = [
        make_log(REGISTRY, abi, {"node": NODE, "amount": i, "total": i}, index=i) for i in (0, 1)
    ]
    events = EventDecoder.for_deployment(deployment).decode_all(logs)
    assert [e.amount for e in events if isinstance(e, Staked)] == [0, 1]


def test_malformed_log_raises_chain_error(deployment: Deployment) -> None:
    abi = event_abi(deployment.registry, "Staked")
    log = make_log(REGISTRY, abi, {"node": NODE, "amount": 1, "total": 2})
    decoder = EventDecoder.for_deployment(deployment)
    with pytest.raises(ChainError, match="Staked log does not match"):
        decoder.decode({**log, "data": log["data"][:40]})
    with pytest.raises(ChainError, match="Staked log does not match"):
        decoder.decode({**log, "topics": log["topics"][:1]})


def test_an_abi_with_renamed_event_fields_is_refused(deployment: Deployment) -> None:
    abi = [dict(i) for i in deployment.registry.abi]
    staked = next(i for i in abi if i.get("name") == "Staked")
    staked["inputs"] = [{**staked["inputs"][0], "name": "who"}, *staked["inputs"][1:]]
    with pytest.raises(ChainError, match="event Staked has fields"):
        EventDecoder(registry=ContractInfo(address=REGISTRY, abi=abi))
