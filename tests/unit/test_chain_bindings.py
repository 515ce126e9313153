"""Binding helpers: hash arguments and struct results named after the ABI."""

from __future__ import annotations

from typing import Any

import pytest

from allmende.chain._binding import to_bytes32
from allmende.chain.compile import compile_contracts
from allmende.chain.deployment import ContractInfo
from allmende.chain.jobs import Job, Jobs, RoundResult
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
    """A client whose every view call returns ``value`` (no chain needed for naming tests)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def contract(self, info: ContractInfo) -> Any:
        from web3 import Web3

        return Web3().eth.contract(address=info.address, abi=info.abi)

    def call(self, fn: Any, **_: Any) -> Any:
        return self.value


def jobs_binding(value: Any, abi: list[dict[str, Any]] | None = None) -> Jobs:
    info = ContractInfo(address=JOBS, abi=abi or compile_contracts()["Jobs"].abi)
    return Jobs(AnswersWith(value), info)  # type: ignore[arg-type]


def test_struct_results_become_records_named_by_the_abi() -> None:
    values = (
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
        b"\0" * 32,
    )
    job = jobs_binding(values).job(1)
    assert isinstance(job, Job) and job.rounds == 2 and job.escrow == 10 and job.round_start == 99


def test_unnamed_tuple_results_are_named_by_position() -> None:
    result = jobs_binding((b"m" * 32, 0b101, 7)).round_result(1, 0)
    assert result == RoundResult(model_hash=b"m" * 32, included=0b101, total_weight=7)


def test_a_struct_with_other_fields_is_refused_with_a_remedy() -> None:
    abi = [dict(item) for item in compile_contracts()["Jobs"].abi]
    jobs_view = next(i for i in abi if i.get("name") == "jobs" and i["type"] == "function")
    components = jobs_view["outputs"][0]["components"]
    jobs_view["outputs"] = [{**jobs_view["outputs"][0], "components": components[:-1]}]
    with pytest.raises(ChainError, match="redeploy the contracts or upgrade allmende"):
        jobs_binding(tuple(range(15)), abi).job(1)
