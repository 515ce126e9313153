"""Binding helpers: hash arguments and struct results named after the ABI."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_utils import collapse_if_tuple, keccak

from allmende.chain._binding import AbiFunction, to_bytes32
from allmende.chain.compile import compile_contracts
from allmende.chain.deployment import ContractInfo
from allmende.chain.jobs import Commit, Job, Jobs, RoundResult
from allmende.errors import ChainError

JOBS = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"


def test_to_bytes32_accepts_bytes_and_hex() -> None:
    assert to_bytes32(b"\x01" * 32) == b"\x01" * 32
    assert to_bytes32("0x" + "ab" * 32) == b"\xab" * 32
    assert to_bytes32("cd" * 32) == b"\xcd" * 32


@pytest.mark.parametrize("bad", [b"\x01" * 31, "0x1234", "zz" * 32])
def test_to_bytes32_refuses_wrong_lengths_and_non_hex(bad: bytes | str) -> None:
    with pytest.raises(ValueError):
        to_bytes32(bad)


class AnswersWith:
    """A client whose every view call returns ``value`` (or ``by_function[name]`` for the views
    it names), ABI-encoded, and whose chain has no logs (no chain needed)."""

    def __init__(
        self, value: Any, abi: list[dict[str, Any]], by_function: dict[str, Any] | None = None
    ) -> None:
        self.value = value
        self.abi = abi
        self.by_function = by_function or {}
        self.calls: list[tuple[str, bytes, str]] = []

    def call_data(self, to: str, data: bytes, *, label: str) -> bytes:
        self.calls.append((to, data, label))
        item = next(i for i in self.abi if i.get("type") == "function" and i["name"] == label)
        types = [collapse_if_tuple(output) for output in item["outputs"]]
        value = self.by_function.get(label, self.value)
        return abi_encode(types, [value] if len(types) == 1 else list(value))

    def block_number(self) -> int:
        return 7

    def get_logs(self, **query: Any) -> list[Any]:
        return []


def jobs_binding(value: Any, abi: list[dict[str, Any]] | None = None, **by_function: Any) -> Jobs:
    abi = abi or compile_contracts()["Jobs"].abi
    info = ContractInfo(address=JOBS, abi=abi)
    return Jobs(AnswersWith(value, abi, by_function), info)  # type: ignore[arg-type]


JOB_VALUES = (
    "0x" + "11" * 20,
    b"a" * 32,
    b"b" * 32,
    2,
    5,
    1,
    3,
    2,
    60,
    10,
    0,
    99,
    1,
    0,
    0,
    # committee_size, signup_end, sealed, trainer_stake, aggregator_stake, weight_cap, attempt,
    # reopens, n_active_trainers, n_volunteers, paid
    3, 0, True, 0, 10**17, 0, 4, 1, 2, 0, 8,
)  # fmt: skip


def test_struct_results_become_records_named_by_the_abi() -> None:
    assert len(JOB_VALUES) == 26
    job = jobs_binding(JOB_VALUES).job(1)
    assert isinstance(job, Job) and job.rounds == 2 and job.escrow == 10 and job.round_start == 99
    assert (job.attempt, job.reopens, job.n_active_trainers, job.paid) == (4, 1, 2, 8)
    # a finished job: its end and final model are what the record says, not separate fields
    assert (job.status, job.ended_at, job.final_model_hash) == (1, 0, bytes(32))
    done = jobs_binding((*JOB_VALUES[:12], 2, *JOB_VALUES[13:])).job(1)
    assert (done.ended_at, done.final_model_hash) == (99, b"b" * 32)


def test_unnamed_tuple_results_are_named_by_position() -> None:
    commit = jobs_binding((b"u" * 32, 7)).commit_of(1, 0, "0x" + "22" * 20)
    assert commit == Commit(update_hash=b"u" * 32, weight=7)


def test_a_round_not_final_has_an_empty_result_and_a_final_one_needs_its_event() -> None:
    current_round_2 = (*JOB_VALUES[:10], 2, *JOB_VALUES[11:])
    jobs = jobs_binding(None, round_result=(bytes(14), 0), jobs=current_round_2)
    assert jobs.round_result(1, 2) == RoundResult(model_hash=bytes(32), included=0, total_weight=0)
    calls = jobs.client.calls  # type: ignore[attr-defined]
    assert [label for _, _, label in calls] == ["round_result", "jobs"]
    with pytest.raises(ChainError, match="pruning logs"):  # round 1 is final: where is its event?
        jobs.round_result(1, 1)


def test_a_struct_with_other_fields_is_refused_with_a_remedy() -> None:
    abi = [dict(item) for item in compile_contracts()["Jobs"].abi]
    jobs_view = next(i for i in abi if i.get("name") == "jobs" and i["type"] == "function")
    components = jobs_view["outputs"][0]["components"]
    jobs_view["outputs"] = [{**jobs_view["outputs"][0], "components": components[:-1]}]
    with pytest.raises(ChainError, match="redeploy the contracts or upgrade allmende"):
        jobs_binding(JOB_VALUES[:-1], abi).job(1)


def test_calls_are_encoded_from_the_abi_and_addresses_come_back_checksummed() -> None:
    trainer = "0x90f79bf6eb2c4f870365e785982e1f101e93b906"
    jobs = jobs_binding(trainer)
    assert jobs.trainer_at(3, 1) == "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
    to, data, label = jobs.client.calls[-1]  # type: ignore[attr-defined]
    assert (to, label) == (JOBS, "trainer_at")
    assert data[:4] == keccak(text="trainer_at(uint256,uint256)")[:4]
    assert data[4:] == abi_encode(["uint256", "uint256"], [3, 1])


def test_results_that_do_not_decode_and_arguments_that_do_not_fit_are_refused() -> None:
    item = next(i for i in compile_contracts()["Jobs"].abi if i.get("name") == "commit_of")
    function = AbiFunction.of(item)
    with pytest.raises(ChainError, match="do not decode"):
        function.decode(b"")  # what a call to an address without code returns
    with pytest.raises(ValueError, match="takes 3 arguments"):
        function.encode((1, 2))
    with pytest.raises(ValueError, match="bad arguments for commit_of"):
        function.encode((1, 2, "not an address"))


class IgnoresTheFilter(AnswersWith):
    """An endpoint that answers every log query with another round's ``RoundFinalized``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queries: list[dict[str, Any]] = []

    def get_logs(self, **query: Any) -> list[Any]:
        self.queries.append(query)
        (topic,) = query["topics"]
        data = abi_encode(["bytes32", "uint256[4]", "uint256"], [b"m" * 32, [1, 0, 0, 0], 1])
        job, round_ = abi_encode(["uint256"], [1]), abi_encode(["uint256"], [0])
        return [{"address": JOBS, "topics": [topic, job, round_], "data": data,
                 "blockNumber": 3, "logIndex": 0, "transactionHash": "0x" + "ab" * 32}]


def test_a_round_result_asks_for_its_own_log_and_refuses_another_rounds() -> None:
    """The query names the job and round; an endpoint that ignores that and sends round 0's
    result for round 1 gets no result accepted, the key check stays the last word."""
    abi = list(compile_contracts()["Jobs"].abi)
    current_round_2 = (*JOB_VALUES[:10], 2, *JOB_VALUES[11:])
    client = IgnoresTheFilter(
        None, abi, {"round_result": (bytes(14), 0), "jobs": current_round_2}
    )
    jobs = Jobs(client, ContractInfo(address=JOBS, abi=abi))  # type: ignore[arg-type]
    with pytest.raises(ChainError, match="pruning logs"):
        jobs.round_result(1, 1)
    assert client.queries[0]["indexed"] == (1, 1)
