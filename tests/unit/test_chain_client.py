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
from allmende.errors import ChainError, ContractRevert


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


# -- what differs between EVM nodes (README, "Other EVM chains"); answers as the nodes sent them

REASON = error_data("registry: not registered")
HARDHAT_REVERT = {  # Hardhat 2.29: code -32603, the revert data one level down
    "code": -32603,
    "message": "Error: VM Exception while processing transaction: reverted with reason string "
    "'registry: not registered'",
    "data": {"message": "Error: VM Exception while processing transaction: reverted with reason "
             "string 'registry: not registered'", "data": REASON},
}  # fmt: skip
HARDHAT_NO_REASON = {
    "code": -32603,
    "message": "Error: Transaction reverted without a reason string",
    "data": {"message": "Error: Transaction reverted without a reason string", "data": "0x"},
}
ANVIL_NO_REASON = {"code": 3, "message": "execution reverted", "data": "0x"}


def test_hardhats_nested_revert_data_is_decoded_like_anvils_flat_data() -> None:
    anvil = {"code": 3, "message": "execution reverted: registry: not registered", "data": REASON}
    for error in (anvil, HARDHAT_REVERT):
        assert _is_revert(error)
        assert _revert_from_error(error, "request_unbond").reason == "registry: not registered"
    mined = {**HARDHAT_REVERT, "data": {**HARDHAT_REVERT["data"], "txHash": "0x" + "ab" * 32}}
    assert _revert_from_error(mined, "request_unbond").reason == "registry: not registered"


def test_a_revert_without_a_reason_reads_the_same_on_every_node() -> None:
    for error in (ANVIL_NO_REASON, HARDHAT_NO_REASON, {"code": 3, "message": "execution reverted"}):
        assert _revert_from_error(error, "stake").reason == "reverted without a reason", error


def test_a_revert_with_only_a_message_keeps_the_contracts_reason() -> None:
    """Nodes that send no data word the reason into the message; the prefix is taken off."""
    hardhat = {"code": -32603, "message": HARDHAT_REVERT["message"]}
    assert _revert_from_error(hardhat, "x").reason == "registry: not registered"
    odd = {"code": -32000, "message": "reverted: something else"}
    assert _revert_from_error(odd, "x").reason == "reverted: something else"  # kept whole


def test_revert_data_nested_too_deep_or_of_the_wrong_type_is_not_read() -> None:
    deep: dict[str, object] = {"data": REASON}
    for _ in range(5):
        deep = {"data": deep}
    error = {"code": 3, "message": "execution reverted: short", "data": deep}
    assert _revert_from_error(error, "x").reason == "short"  # from the message instead
    for data in (123, ["0x08c379a0"], {"data": 5}, "not hex"):
        assert _revert_from_error({"code": 3, "message": "execution reverted: m", "data": data},
                                  "x").reason == "m"  # fmt: skip


class FakeChain:
    """Answers a ChainClient's JSON-RPC calls as a node that mines on arrival would."""

    def __init__(self, *, send_error: dict[str, object] | None = None,
                 priority_fee: dict[str, object] | None = None) -> None:  # fmt: skip
        self.send_error = send_error
        self.priority_fee = priority_fee or {"result": "0x3b9aca00"}
        self.nonce_reads = 0
        self.nonce_blocks: list[str] = []
        self.dropped = False  # whether the chain has forgotten the transaction
        self.calls: list[str] = []

    def __call__(self, method: str, params: list[object]) -> dict[str, object]:
        self.calls.append(method)
        answers: dict[str, dict[str, object]] = {
            "eth_chainId": {"result": "0x539"},
            "eth_estimateGas": {"result": "0x5208"},
            "eth_getBlockByNumber": {"result": {"baseFeePerGas": "0x10"}},
            "eth_maxPriorityFeePerGas": self.priority_fee,
            "eth_gasPrice": {"result": "0x30"},
            "eth_getBalance": {"result": "0x0"},
            "eth_getTransactionReceipt": {"result": RECEIPT},
            "eth_getTransactionByHash": {"result": None if self.dropped else {"hash": "0x"}},
        }
        if method == "eth_getTransactionCount":
            self.nonce_reads += 1
            self.nonce_blocks.append(str(params[1]))
            return {"result": "0x7"}
        if method == "eth_sendRawTransaction":
            return {"error": self.send_error} if self.send_error else {"result": "0x" + "ab" * 32}
        return answers[method]


def client_on(chain: FakeChain, monkeypatch) -> ChainClient:
    client = ChainClient("http://127.0.0.1:9", "0x" + "42" * 32)
    monkeypatch.setattr(client._transport, "call", chain)
    return client


def test_a_transaction_reverted_at_send_is_a_contract_revert_and_its_nonce_is_spent(
    monkeypatch,
) -> None:
    """Hardhat mines on arrival and answers eth_sendRawTransaction with the revert itself."""
    mined_revert = {**HARDHAT_REVERT, "data": {**HARDHAT_REVERT["data"], "txHash": "0x01"}}
    chain = FakeChain(send_error=mined_revert)
    client = client_on(chain, monkeypatch)
    with pytest.raises(ContractRevert) as refused:
        client.send_value("0x5FbDB2315678afecb367f032d93F642f64180aa3", 1)
    assert (refused.value.reason, refused.value.function) == ("registry: not registered",
                                                             "transfer")  # fmt: skip
    assert chain.calls.count("eth_sendRawTransaction") == 1  # never sent again
    chain.send_error = None
    client.send_value("0x5FbDB2315678afecb367f032d93F642f64180aa3", 1)
    assert chain.nonce_reads == 2  # the next transaction asked the chain for the nonce again


@pytest.mark.parametrize(
    "message",
    [
        "Insufficient funds for gas * price + value",  # Anvil
        "insufficient funds for gas * price + value: balance 0, tx cost 4200",  # geth
        "Sender doesn't have enough funds to send tx. The max upfront cost is: 73804240000000 "
        "and the sender's balance is: 0.",  # Hardhat
    ],
)
def test_an_account_that_cannot_pay_is_told_so_in_one_line(message, monkeypatch) -> None:
    client = client_on(FakeChain(send_error={"code": -32000, "message": message}), monkeypatch)
    with pytest.raises(ChainError) as refused:
        client.send_value("0x5FbDB2315678afecb367f032d93F642f64180aa3", 1)
    text = str(refused.value)
    assert not isinstance(refused.value, ContractRevert)
    assert f"The account {client.address} cannot pay for the transfer transaction" in text
    assert "holds 0 wei" in text and "send it ether and retry" in text and "\n" not in text


def test_a_node_without_eth_max_priority_fee_per_gas_gets_its_tip_from_the_gas_price(
    monkeypatch,
) -> None:
    missing = {"error": {"code": -32601, "message": "Method not found"}}
    client = client_on(FakeChain(priority_fee=missing), monkeypatch)
    assert client.fees() == {"maxFeePerGas": 2 * 0x10 + 0x20, "maxPriorityFeePerGas": 0x20}
    broken = {"error": {"code": -32000, "message": "internal error"}}
    with pytest.raises(ChainError, match="eth_maxPriorityFeePerGas failed"):
        client_on(FakeChain(priority_fee=broken), monkeypatch).fees()


def test_progress_is_told_of_each_transaction_sent_waited_for_and_mined(monkeypatch) -> None:
    seen: list[tuple[str, str]] = []

    class Progress:
        def sent(self, label: str, tx_hash: str) -> None:
            seen.append(("sent", label))

        def waiting(self, label: str, tx_hash: str, seconds: float) -> None:
            seen.append(("waiting", label))

        def mined(self, label: str, receipt) -> None:
            seen.append(("mined", label))

    chain = FakeChain()
    client = client_on(chain, monkeypatch)
    client.progress = Progress()
    pending = iter([None, None, RECEIPT])
    answers = chain.__call__

    def slow_receipts(method: str, params: list[object]) -> dict[str, object]:
        return {"result": next(pending)} if method == "eth_getTransactionReceipt" else answers(
            method, params)  # fmt: skip

    monkeypatch.setattr(client._transport, "call", slow_receipts)
    clock = iter(range(0, 100, 2))  # each look at the clock is two seconds later
    monkeypatch.setattr("allmende.chain.client.time.monotonic", lambda: float(next(clock)))
    monkeypatch.setattr("allmende.chain.client.time.sleep", lambda _: None)
    client.send_value("0x5FbDB2315678afecb367f032d93F642f64180aa3", 1)
    assert seen == [("sent", "transfer"), ("waiting", "transfer"), ("waiting", "transfer"),
                    ("mined", "transfer")]  # fmt: skip


def never_mined(client: ChainClient, chain: FakeChain, monkeypatch) -> None:
    """The chain never mines; each look at the clock is a second later."""
    answers = chain.__call__

    def no_receipt(method: str, params: list[object]) -> dict[str, object]:
        return {"result": None} if method == "eth_getTransactionReceipt" else answers(
            method, params)  # fmt: skip

    monkeypatch.setattr(client._transport, "call", no_receipt)
    clock = iter(range(0, 10_000))
    monkeypatch.setattr("allmende.chain.client.time.monotonic", lambda: float(next(clock)))
    monkeypatch.setattr("allmende.chain.client.time.sleep", lambda _: None)


def test_a_transaction_the_chain_dropped_fails_fast_and_the_nonce_is_read_from_latest(
    monkeypatch,
) -> None:
    chain = FakeChain()
    client = client_on(chain, monkeypatch)
    never_mined(client, chain, monkeypatch)
    chain.dropped = True
    with pytest.raises(ChainError, match="dropped by the chain"):
        client.send_value("0x5FbDB2315678afecb367f032d93F642f64180aa3", 1)
    assert chain.nonce_blocks == ["pending"]
    chain.dropped = False
    monkeypatch.setattr(client._transport, "call", chain)
    client.send_value("0x5FbDB2315678afecb367f032d93F642f64180aa3", 1)
    assert chain.nonce_blocks == ["pending", "latest"]  # a lost nonce is not counted again


def test_a_wait_gives_up_once_the_chain_is_known_to_have_lost_blocks(monkeypatch) -> None:
    chain = FakeChain()
    client = client_on(chain, monkeypatch)
    never_mined(client, chain, monkeypatch)
    answers = client._transport.call

    def lose_blocks_while_waiting(method: str, params: list[object]) -> dict[str, object]:
        if method == "eth_getTransactionReceipt":
            client.forget_nonce()  # what the roles do when the event stream saw blocks lost
        return answers(method, params)

    monkeypatch.setattr(client._transport, "call", lose_blocks_while_waiting)
    with pytest.raises(ChainError, match="sent before blocks were lost"):
        client.send_value("0x5FbDB2315678afecb367f032d93F642f64180aa3", 1)


def test_a_pending_transaction_the_chain_still_knows_is_waited_for(monkeypatch) -> None:
    chain = FakeChain()
    client = client_on(chain, monkeypatch)
    never_mined(client, chain, monkeypatch)
    client.receipt_timeout = 30
    with pytest.raises(ChainError, match="not mined within 30 s"):
        client.send_value("0x5FbDB2315678afecb367f032d93F642f64180aa3", 1)
    assert chain.calls.count("eth_getTransactionByHash") >= 5  # checked, and kept waiting


def test_an_indexed_uint_topic_is_32_big_endian_bytes_and_none_matches_any() -> None:
    from allmende.chain.client import uint_topic

    assert uint_topic(5) == "0x" + "00" * 31 + "05"
    assert uint_topic(None) is None
    with pytest.raises(ValueError, match="not a uint256"):
        uint_topic(-1)
    with pytest.raises(ValueError, match="not a uint256"):
        uint_topic(2**256)
