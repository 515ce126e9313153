"""Revert data from the chain becomes the contract's own message, whatever shape it arrives in."""

from __future__ import annotations

import pytest
from eth_abi import encode

from allmende.chain.client import (
    ChainClient,
    _is_revert,
    _log_entry,
    _quantity,
    _revert_from_error,
    constructor_arguments,
    decode_revert,
)
from allmende.chain.compile import CompiledContract
from allmende.errors import ChainError


def error_data(reason: str) -> str:
    return "0x08c379a0" + encode(["string"], [reason]).hex()


def test_error_string_is_decoded() -> None:
    assert decode_revert(error_data("jobs: round already final")) == "jobs: round already final"
    assert decode_revert(bytes.fromhex(error_data("registry: x")[2:])) == "registry: x"


def test_panic_is_described() -> None:
    data = "0x4e487b71" + encode(["uint256"], [0x11]).hex()
    assert decode_revert(data) == "panic 0x11"


def test_empty_revert_has_no_reason() -> None:
    assert decode_revert("0x") == "reverted without a reason"
    assert decode_revert(None) == "reverted without a reason"


def test_malformed_error_data_is_described_not_raised() -> None:
    truncated = error_data("jobs: cut")[:20]
    assert decode_revert(truncated).startswith("reverted with undecodable data 0x08c379a0")
    assert decode_revert("0xdeadbeef").startswith("reverted with undecodable data")


def test_unreachable_chain_raises_chain_error_with_a_remedy() -> None:
    client = ChainClient("http://127.0.0.1:9", timeout=0.5)  # port 9: discard, nothing listens
    with pytest.raises(ChainError, match="allmende devnet status"):
        client.block_number()


def test_sending_without_a_key_is_refused() -> None:
    client = ChainClient("http://127.0.0.1:9")
    with pytest.raises(ChainError, match="no key"):
        client.send_value("0x5FbDB2315678afecb367f032d93F642f64180aa3", 1)


def test_a_json_rpc_revert_error_becomes_contract_revert_with_reason() -> None:
    error = {"code": 3, "message": "execution reverted: jobs: x", "data": error_data("jobs: x")}
    revert = _revert_from_error(error, "propose")
    assert (revert.reason, revert.function) == ("jobs: x", "propose")
    bare = _revert_from_error({"code": 3, "message": "execution reverted: registry: y"}, "stake")
    assert bare.reason == "registry: y"
    assert _is_revert(error) and not _is_revert({"code": -32000, "message": "nonce too low"})


def test_logs_are_parsed_and_a_malformed_one_is_refused_clearly() -> None:
    entry = {
        "address": "0x5fbdb2315678afecb367f032d93f642f64180aa3",
        "topics": ["0x" + "ab" * 32],
        "data": "0x01",
        "blockNumber": "0x1a",
        "logIndex": "0x2",
        "transactionHash": "0x" + "cd" * 32,
    }
    parsed = _log_entry(entry)
    assert parsed["topics"] == [b"\xab" * 32] and parsed["data"] == b"\x01"
    assert (parsed["blockNumber"], parsed["logIndex"]) == (26, 2)
    for broken in ({**entry, "data": "zz"}, {**entry, "blockNumber": None}, {"topics": []}):
        with pytest.raises(ChainError, match="malformed log"):
            _log_entry(broken)


RECEIPT = {
    "transactionHash": "0x" + "ab" * 32, "blockNumber": "0x7", "status": "0x1",
    "gasUsed": "0x5208", "effectiveGasPrice": "0x1", "logs": [],
}  # fmt: skip


def test_a_receipt_is_asked_again_after_short_then_steady_waits(monkeypatch) -> None:
    client = ChainClient("http://127.0.0.1:9")  # nothing listens: the test answers instead
    answers = iter([None] * 7 + [RECEIPT])
    monkeypatch.setattr(client, "request", lambda method, params, **_: next(answers))
    slept: list[float] = []
    monkeypatch.setattr("allmende.chain.client.time.sleep", slept.append)
    receipt = client._wait("0x" + "ab" * 32, {}, "propose")
    assert receipt.block_number == 7 and receipt.gas_used == 21000
    assert slept == [0.002, 0.004, 0.008, 0.016, 0.02, 0.02, 0.02]


def test_a_receipt_that_never_comes_times_out_with_the_function_named(monkeypatch) -> None:
    client = ChainClient("http://127.0.0.1:9", receipt_timeout=0.0)
    monkeypatch.setattr(client, "request", lambda method, params, **_: None)
    monkeypatch.setattr("allmende.chain.client.time.sleep", lambda _: None)
    with pytest.raises(ChainError, match=r"propose transaction 0x\w+ was not mined within 0 s"):
        client._wait("0x" + "ab" * 32, {}, "propose")


def test_a_quantity_that_is_not_hex_is_refused_clearly() -> None:
    assert _quantity("0x7a69", "eth_chainId") == 31337
    for answer in (None, 31337, "7a69", "0xzz", ["0x1"]):
        with pytest.raises(ChainError, match="eth_chainId"):
            _quantity(answer, "eth_chainId")


def test_constructor_arguments_are_abi_encoded_and_counted() -> None:
    abi = [{"type": "constructor", "inputs": [{"name": "a", "type": "address"},
                                              {"name": "n", "type": "uint256"}]}]  # fmt: skip
    compiled = CompiledContract(name="Pair", abi=abi, bytecode="0x00")
    address = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    assert constructor_arguments(compiled, (address, 5)) == encode(
        ["address", "uint256"], [address, 5]
    )
    with pytest.raises(ValueError, match="takes 2 arguments, got 1"):
        constructor_arguments(compiled, (address,))
    no_constructor = CompiledContract(name="Bare", abi=[], bytecode="0x00")
    assert constructor_arguments(no_constructor, ()) == b""


def test_a_node_and_the_devnet_load_neither_web3_nor_eth_account() -> None:
    """Importing either costs a node over a second of its start (see the module docstring)."""
    import subprocess
    import sys

    code = (
        "import sys, allmende.node.process, allmende.node.fleet, allmende.chain.devnet\n"
        "from allmende.chain import Contracts, dev_keys\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'web3', 'eth_account', 'eth_keyfile', 'py_ecc', 'requests', 'aiohttp'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.strip() == "[]"
