"""A small chain client: one RPC endpoint, one local key, signed transactions, typed reverts.

Every transaction is estimated first (a refusal surfaces as :class:`ContractRevert` carrying the
contract's own message), signed locally, sent, and waited for. Nonces are counted locally under a
lock (so one process can send from several threads); the chain's pending count is read at the
first transaction and again when the chain refuses a nonce (another client sent from the same
key), and that transaction is then sent once more. Fees are read at most once a second.

EVM nodes differ in how they say things, and this client reads each way the same
(``README.md``, "Other EVM chains"): revert data comes as a hex string (geth, Anvil) or nested in
an object (Hardhat: ``{"message", "data"}``); a transaction that reverts in the block it was
mined in is reported by its receipt's status (geth, Anvil) or as an error answer to
``eth_sendRawTransaction`` itself (Hardhat, which mines on arrival); an account that cannot pay
is worded three ways; a node without ``eth_maxPriorityFeePerGas`` gets its tip from
``eth_gasPrice``.

The calls a node makes every round (``eth_call``, ``eth_getLogs``, transactions) go straight to
the endpoint with :meth:`ChainClient.request` over a kept-alive connection
(:mod:`allmende.chain.rpc`), skipping web3's middleware and contract machinery, which made a view
call about ten times slower (``benchmarks/chain_calls.py``). Transactions are signed by
:class:`CallSigner`. So a node never imports web3 or eth_account (over a second of its start);
:attr:`ChainClient.w3` builds a web3 connection on first use, for tools that want one.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import collapse_if_tuple

from allmende.chain.addresses import to_checksum_address
from allmende.chain.compile import CompiledContract
from allmende.chain.deployment import ContractInfo
from allmende.chain.keys import LocalKey
from allmende.chain.rpc import JsonRpcTransport, RpcBadAnswer, RpcUnreachable
from allmende.chain.signing import CallSigner
from allmende.errors import ChainError, ContractRevert

if TYPE_CHECKING:  # web3 is imported only by the tools that ask for :attr:`ChainClient.w3`
    from web3 import Web3
    from web3.contract import Contract

DEFAULT_RPC_TIMEOUT = 10.0
DEFAULT_RECEIPT_TIMEOUT = 60.0
# Waits between asking for a receipt: a devnet mines a transaction a few milliseconds after
# accepting it, so the first waits are short; a real chain's blocks take seconds, so the last
# wait repeats until the receipt timeout.
RECEIPT_POLL_SECONDS = (0.002, 0.004, 0.008, 0.016, 0.02)
# While waiting for a receipt, how often to check that the chain still knows the transaction.
DROPPED_CHECK_SECONDS = 2.0
GAS_MARGIN = 1.2  # estimate * margin: room for state that changes between estimate and mining
# Fees are reused this long. maxFeePerGas is twice the base fee plus the tip, which covers the
# base fee's rise over several full blocks.
FEE_CACHE_SECONDS = 1.0
ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)
# How nodes word a revert that carries no data: the reason follows one of these prefixes.
REVERT_MESSAGE_PREFIXES = (
    "execution reverted: ",  # geth, Anvil, and the nodes that copy geth
    "Error: VM Exception while processing transaction: reverted with reason string ",  # Hardhat
)
NO_REASON_MESSAGES = ("execution reverted", "Error: Transaction reverted without a reason string")
MAX_ERROR_NESTING = 3  # Hardhat nests revert data one level deep; a deeper error is not read
# How nodes word "the account cannot pay for this transaction" (geth, Anvil, Hardhat).
NO_FUNDS_MARKERS = ("insufficient funds", "doesn't have enough funds")
METHOD_NOT_FOUND = -32601
PROGRESS_SECONDS = 1.0  # how often a waiting transaction is reported to a progress observer


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """A mined transaction: what it cost and the raw logs it emitted."""

    tx_hash: str
    block_number: int
    status: int
    gas_used: int
    effective_gas_price: int
    logs: tuple[Any, ...]
    contract_address: str | None = None  # the new contract's, for a creation

    @property
    def fee(self) -> int:
        """Wei the sender paid for gas: ``gas_used * effective_gas_price``."""
        return self.gas_used * self.effective_gas_price


class TxProgress(Protocol):
    """Told about each transaction a :class:`ChainClient` sends (a CLI shows it to the user)."""

    def sent(self, label: str, tx_hash: str) -> None: ...

    def waiting(self, label: str, tx_hash: str, seconds: float) -> None: ...

    def mined(self, label: str, receipt: Receipt) -> None: ...


def decode_revert(data: bytes | str | None) -> str:
    """Turn revert data into the contract's message; unknown data is described, never raised."""
    if isinstance(data, str):
        try:
            data = bytes.fromhex(data.removeprefix("0x"))
        except ValueError:
            return str(data)  # already a message
    if not data:
        return "reverted without a reason"
    selector, payload = data[:4], data[4:]
    try:
        if selector == ERROR_SELECTOR:
            (reason,) = abi_decode(["string"], payload)
            return str(reason)
        if selector == PANIC_SELECTOR:
            (code,) = abi_decode(["uint256"], payload)
            return f"panic 0x{code:02x}"
    except Exception:  # malformed data from the chain: describe it, don't crash
        pass
    return f"reverted with undecodable data 0x{data.hex()}"


def first_topic_filter(topics: Iterable[bytes]) -> list[list[str]]:
    """The JSON-RPC ``topics`` of a log query whose first topic is any of ``topics``."""
    return [["0x" + topic.hex() for topic in topics]]


def uint_topic(value: int | None) -> str | None:
    """The JSON-RPC topic of an indexed ``uint256`` argument (None matches any value)."""
    if value is None:
        return None
    if not 0 <= value < 2**256:
        raise ValueError(f"{value} is not a uint256")
    return "0x" + value.to_bytes(32, "big").hex()


def _hex_bytes(value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ChainError(f"The chain answered {value!r:.100} where hex data was expected.")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise ChainError(f"The chain answered malformed hex data {value!r:.100}.") from None


def _log_entry(entry: Any) -> dict[str, Any]:
    """A JSON-RPC log with its hex fields parsed: topics and data as bytes, numbers as ints."""
    try:
        return {
            "address": str(entry["address"]),
            "topics": [_hex_bytes(topic) for topic in entry["topics"]],
            "data": _hex_bytes(entry["data"]),
            "blockNumber": int(entry["blockNumber"], 16),
            "logIndex": int(entry["logIndex"], 16),
            "transactionHash": str(entry["transactionHash"]),
        }
    except (KeyError, TypeError, ValueError, ChainError) as exc:
        raise ChainError(f"The chain sent a malformed log ({exc!r}): {entry!r:.200}.") from None


def _quantity(value: Any, method: str) -> int:
    """A JSON-RPC quantity (``0x`` hex) as an int; :class:`ChainError` for anything else."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ChainError(f"The chain answered {method} with {value!r:.100}, not a quantity.")
    try:
        return int(value, 16)
    except ValueError:
        raise ChainError(f"The chain answered {method} with bad hex {value!r:.100}.") from None


def constructor_arguments(compiled: CompiledContract, args: tuple[Any, ...]) -> bytes:
    """The ABI encoding of ``args`` for the contract's constructor (empty without one)."""
    constructors = [item for item in compiled.abi if item.get("type") == "constructor"]
    inputs: list[dict[str, Any]] = constructors[0]["inputs"] if constructors else []
    if len(args) != len(inputs):
        raise ValueError(f"{compiled.name}'s constructor takes {len(inputs)} arguments, "
                         f"got {len(args)}")  # fmt: skip
    return abi_encode([collapse_if_tuple(item) for item in inputs], list(args))


def _as_call(tx: dict[str, Any]) -> dict[str, Any]:
    """The JSON-RPC call object (``eth_call``, ``eth_estimateGas``) of a transaction."""
    call: dict[str, Any] = {key: tx[key] for key in ("from", "to", "data") if key in tx}
    return {**call, "value": hex(tx.get("value", 0))}


def _is_revert(error: Any) -> bool:
    if not isinstance(error, dict):
        return False
    message = str(error.get("message", ""))
    return error.get("code") == 3 or "revert" in message.lower()


def _revert_data(data: Any, depth: int = 0) -> str | None:
    """The ``0x`` revert bytes in an error's ``data``: the string itself (geth, Anvil), or the
    ``data`` of an object (Hardhat's ``{"message", "txHash", "data"}``); None if there are none."""
    if isinstance(data, str):
        return data if data.startswith("0x") else None
    if isinstance(data, dict) and depth < MAX_ERROR_NESTING:
        return _revert_data(data.get("data"), depth + 1)
    return None


def _revert_from_error(error: dict[str, Any], function: str) -> ContractRevert:
    data = _revert_data(error.get("data"))
    if data is not None and len(data) > 2:
        reason = decode_revert(data)
    else:
        message = str(error.get("message", "")).strip()
        reason = "" if data == "0x" or message in NO_REASON_MESSAGES else message
        for prefix in REVERT_MESSAGE_PREFIXES:
            if message.startswith(prefix):
                reason = message.removeprefix(prefix).strip()
                if prefix != REVERT_MESSAGE_PREFIXES[0] and reason[:1] == reason[-1:] == "'":
                    reason = reason[1:-1]  # Hardhat quotes the reason
                break
    return ContractRevert(reason or "reverted without a reason", function=function)


def _is_no_funds(exc: ChainError) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in NO_FUNDS_MARKERS)


class ChainClient:
    """A connection to one EVM RPC endpoint, optionally with a local signing key."""

    def __init__(
        self,
        rpc_url: str,
        private_key: str | None = None,
        *,
        timeout: float = DEFAULT_RPC_TIMEOUT,
        receipt_timeout: float = DEFAULT_RECEIPT_TIMEOUT,
    ) -> None:
        self.rpc_url = rpc_url
        self.timeout = timeout
        try:
            self._transport = JsonRpcTransport(rpc_url, timeout=timeout)
        except ValueError:
            raise ChainError(
                f"The RPC URL {rpc_url!r} is not an http(s) URL; fix [chain] rpc_url or the "
                "deployment file."
            ) from None
        self.account: LocalKey | None = (
            LocalKey.from_key(private_key) if private_key is not None else None
        )
        self.receipt_timeout = receipt_timeout
        self._nonce: int | None = None
        # "latest" after the chain lost transactions: a lost one leaves the pending count
        # (which counts queued transactions of this account) above what can ever be mined
        self._nonce_block = "pending"
        self._lost_generation = 0  # grows each time the chain is known to have lost blocks
        self._lock = threading.Lock()
        self._call_signer: CallSigner | None = None
        self._fees_read: tuple[float, dict[str, int]] | None = None  # (monotonic time, fees)
        self._chain_id: int | None = None
        self.progress: TxProgress | None = None  # told about every transaction sent

    @property
    def address(self) -> str:
        """The checksummed address of the signing key."""
        if self.account is None:
            raise ChainError("This chain client has no key; pass private_key to send transactions.")
        return str(self.account.address)

    @cached_property
    def w3(self) -> Web3:
        """A web3 connection to the same endpoint, for tools (web3 is imported here)."""
        import requests
        from web3 import HTTPProvider, Web3

        session = requests.Session()
        session.trust_env = False  # no proxy lookup in the environment on every call
        provider = HTTPProvider(self.rpc_url, request_kwargs={"timeout": self.timeout},
                                session=session)  # fmt: skip
        return Web3(provider)

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self._read_int("eth_chainId", [])
        return self._chain_id

    def block_number(self) -> int:
        return self._read_int("eth_blockNumber", [])

    def block_hash(self, number: int) -> str | None:
        """The hash of block ``number``, or None when the chain has no such block (yet)."""
        header = self.block_header(number)
        return None if header is None else header[0]

    def block_header(self, number: int) -> tuple[str, int] | None:
        """The hash and timestamp of block ``number``, or None when the chain has no such block."""
        block = self.request("eth_getBlockByNumber", [hex(number), False])
        if block is None:
            return None
        if (
            not isinstance(block, dict)
            or not isinstance(block.get("hash"), str)
            or not isinstance(block.get("timestamp"), str)
        ):
            raise ChainError(f"{self.rpc_url} answered block {number} with {block!r:.80}.")
        try:
            timestamp = int(block["timestamp"], 16)
        except ValueError:
            raise ChainError(
                f"{self.rpc_url} answered block {number} with timestamp {block['timestamp']!r:.40}."
            ) from None
        return str(block["hash"]), timestamp

    def forget_nonce(self) -> None:
        """Read the account's nonce from the chain before the next transaction (after the chain
        lost blocks, the transactions in them and the nonces they used are gone). Transactions
        still waiting for a receipt give up once the chain does not mine them soon, so the step
        that sent them sends them again with a nonce the chain can use."""
        with self._lock:
            self._nonce = None
            self._nonce_block = "latest"
            self._lost_generation += 1

    def balance(self, address: str) -> int:
        return self._read_int("eth_getBalance", [to_checksum_address(address), "latest"])

    def has_code(self, address: str) -> bool:
        code = _hex_bytes(self.request("eth_getCode", [to_checksum_address(address), "latest"]))
        return len(code) > 0

    def _read_int(self, method: str, params: list[Any]) -> int:
        return _quantity(self.request(method, params), method)

    def get_logs(
        self,
        *,
        from_block: int,
        to_block: int,
        addresses: list[str],
        topics: list[bytes] | None = None,
        indexed: Sequence[int | None] = (),
    ) -> list[Any]:
        """Logs of ``addresses`` in the inclusive block range (topics and data as bytes);
        with ``topics``, only the logs whose first topic is one of them; ``indexed``: the
        values the event's indexed ``uint256`` arguments must have, in order (None: any), so
        the chain leaves out the other jobs' and rounds' logs."""
        query: dict[str, Any] = {
            "fromBlock": hex(from_block),
            "toBlock": hex(to_block),
            "address": addresses,
        }
        if indexed and topics is None:
            raise ValueError("indexed arguments filter only the logs of named event topics")
        if topics is not None:
            query["topics"] = [*first_topic_filter(topics), *map(uint_topic, indexed)]
        raw = self.request("eth_getLogs", [query])
        if not isinstance(raw, list):
            raise ChainError(f"The chain at {self.rpc_url} answered eth_getLogs with {raw!r:.100}.")
        return [_log_entry(entry) for entry in raw]

    def contract(self, info: ContractInfo) -> Contract:
        """A web3 contract object (for tools; the node uses :mod:`allmende.chain._binding`)."""
        address: Any = to_checksum_address(info.address)  # web3 types it as ChecksumAddress
        return self.w3.eth.contract(address=address, abi=info.abi)

    def call_data(
        self, to: str, data: bytes, *, label: str, block: str = "latest", sender: str | None = None
    ) -> bytes:
        """``eth_call`` of raw calldata (as ``sender``, when given: what that account's
        transaction would do now); the returned bytes, or :class:`ContractRevert`."""
        call: dict[str, str] = {"to": to, "data": "0x" + data.hex()}
        if sender is not None:
            call["from"] = sender
        return _hex_bytes(self.request("eth_call", [call, block], label=label))

    def send_data(self, to: str, data: bytes, *, value: int = 0, label: str) -> Receipt:
        """Sign, send and wait for a transaction with raw calldata (see :meth:`transact`)."""
        return self._send({"to": to, "data": "0x" + data.hex()}, value=value, label=label)

    def send_value(self, to: str, amount: int) -> Receipt:
        """Send plain ether to ``to``."""
        return self._send({"to": to_checksum_address(to)}, value=amount, label="transfer")

    def deploy(self, compiled: CompiledContract, *args: Any) -> tuple[str, Receipt]:
        """Deploy a compiled contract with constructor ``args``; return (address, receipt)."""
        data = compiled.bytecode.removeprefix("0x") + constructor_arguments(compiled, args).hex()
        label = f"{compiled.name} constructor"
        receipt = self._send({"data": "0x" + data}, value=0, label=label)
        if receipt.contract_address is None:
            raise ChainError(f"The {label} transaction {receipt.tx_hash} created no contract.")
        return receipt.contract_address, receipt

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """A raw JSON-RPC call (``evm_increaseTime`` and other devnet helpers)."""
        return self.request(method, params or [])

    def request(self, method: str, params: list[Any], *, label: str | None = None) -> Any:
        """One JSON-RPC call, straight to the provider; its ``result``.

        An error answer raises :class:`ContractRevert` when it is a revert and ``label`` (the
        function's name) is given, else :class:`ChainError` with the chain's message.
        """
        return self._result(self._transport_call(method, params), method, label)

    def _transport_call(self, method: str, params: list[Any]) -> dict[str, Any]:
        """The JSON-RPC answer (a dict with ``result`` or ``error``), or :class:`ChainError`."""
        try:
            response = self._transport.call(method, params)
        except RpcUnreachable as exc:
            raise ChainError(
                f"Cannot reach the chain at {self.rpc_url} ({exc}); check that it is running "
                "(`allmende devnet status`) and the URL is right."
            ) from None
        except RpcBadAnswer as exc:
            raise ChainError(f"{self.rpc_url} answered {method} with: {exc}.") from None
        if not isinstance(response, dict):
            raise ChainError(f"{self.rpc_url} answered {method} with {response!r:.80}.")
        return response

    def _result(self, response: dict[str, Any], method: str, label: str | None) -> Any:
        error = response.get("error")
        if error is not None:
            if label is not None and _is_revert(error):
                raise _revert_from_error(error, label)
            raise ChainError(f"The RPC call {method} failed: {error}.")
        return response.get("result")

    def _send(self, tx: dict[str, Any], *, value: int, label: str) -> Receipt:
        account = self.account
        if account is None:
            raise ChainError("This chain client has no key; pass private_key to send transactions.")
        tx = {**tx, "from": account.address, "value": value, "chainId": self.chain_id}
        try:
            gas = int(self.request("eth_estimateGas", [_as_call(tx)], label=label), 16)
            tx["gas"] = int(gas * GAS_MARGIN)
            tx.update(self._fees())
            tx_hash = self._send_signed(account, tx, label)
        except ContractRevert:
            raise
        except ChainError as exc:
            if not _is_no_funds(exc):
                raise
            raise ChainError(
                f"The account {account.address} cannot pay for the {label} transaction on "
                f"chain {self.chain_id} (it holds {self.balance(account.address)} wei; the chain "
                f"said: {exc}); send it ether and retry."
            ) from None
        if self.progress is not None:
            self.progress.sent(label, tx_hash)
        return self._wait(tx_hash, tx, label)

    def _send_signed(self, account: LocalKey, tx: dict[str, Any], label: str) -> str:
        """Sign ``tx`` with the next nonce and send it; its hash.

        A node that mines on arrival may answer with the revert of the block it was just mined
        in (Hardhat): that is :class:`ContractRevert`, and the nonce it used is spent.
        """
        with self._lock:
            for attempt in range(2):
                if self._nonce is None:  # the first transaction, or after a refusal
                    block = self._nonce_block
                    self._nonce = int(
                        self.request("eth_getTransactionCount", [account.address, block]), 16
                    )
                    self._nonce_block = "pending"
                tx["nonce"] = self._nonce
                raw = self._sign(account, tx)
                try:
                    tx_hash = str(
                        self.request("eth_sendRawTransaction", ["0x" + raw.hex()], label=label)
                    )
                except ContractRevert:
                    self._nonce = None  # mined and reverted, or refused: the chain knows which
                    raise
                except ChainError as exc:
                    self._nonce = None  # unknown whether it went out: re-read from chain
                    if attempt == 0 and "nonce" in str(exc).lower():
                        continue  # another client used this nonce: take the chain's count
                    raise
                except BaseException:
                    self._nonce = None
                    raise
                self._nonce += 1
                return tx_hash
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _sign(self, account: LocalKey, tx: dict[str, Any]) -> bytes:
        """The raw signed ``tx`` (every transaction this client builds has the signer's shape)."""
        if self._call_signer is None:
            self._call_signer = CallSigner(bytes(account.key))
        return self._call_signer.sign(tx)

    def _fees(self) -> dict[str, int]:
        read = self._fees_read
        if read is not None and time.monotonic() - read[0] < FEE_CACHE_SECONDS:
            return read[1]
        block = self.request("eth_getBlockByNumber", ["latest", False])
        if not isinstance(block, dict):
            raise ChainError(f"The chain at {self.rpc_url} answered {block!r:.100} for its "
                             "latest block.")  # fmt: skip
        base = _quantity(block.get("baseFeePerGas") or "0x0", "eth_getBlockByNumber")
        tip = self._priority_fee(base)
        fees = {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}
        self._fees_read = (time.monotonic(), fees)
        return fees

    def fees(self) -> dict[str, int]:
        """``maxFeePerGas`` and ``maxPriorityFeePerGas`` (wei) the next transaction offers."""
        return dict(self._fees())

    def _priority_fee(self, base_fee: int) -> int:
        """``eth_maxPriorityFeePerGas``; on a node without it, ``eth_gasPrice`` less the base fee
        (what geth's own suggestion is made of)."""
        response = self._transport_call("eth_maxPriorityFeePerGas", [])
        error = response.get("error")
        if isinstance(error, dict) and error.get("code") == METHOD_NOT_FOUND:
            return max(0, self._read_int("eth_gasPrice", []) - base_fee)
        return _quantity(self._result(response, "eth_maxPriorityFeePerGas", None),
                         "eth_maxPriorityFeePerGas")  # fmt: skip

    def _wait(self, tx_hash: str, tx: dict[str, Any], label: str) -> Receipt:
        """Wait for the receipt: asked at once (a devnet mines on arrival), then after each of
        :data:`RECEIPT_POLL_SECONDS` (the last repeated), up to ``receipt_timeout``."""
        started = time.monotonic()
        deadline = started + self.receipt_timeout
        next_check = started + DROPPED_CHECK_SECONDS
        generation = self._lost_generation
        waits = itertools.chain(RECEIPT_POLL_SECONDS, itertools.repeat(RECEIPT_POLL_SECONDS[-1]))
        reported = started
        while (raw := self.request("eth_getTransactionReceipt", [tx_hash])) is None:
            now = time.monotonic()
            if now > next_check:  # still minable? (a rollback or restart drops it, or its nonce)
                next_check = now + DROPPED_CHECK_SECONDS
                dropped = self.request("eth_getTransactionByHash", [tx_hash]) is None
                if dropped or self._lost_generation != generation:
                    self.forget_nonce()
                    raise ChainError(
                        f"The {label} transaction {tx_hash} was "
                        f"{'dropped by' if dropped else 'sent before blocks were lost from'} the "
                        "chain; the step that sent it will send it again."
                    )
            if now > deadline:
                self.forget_nonce()  # a transaction the chain dropped leaves a gap in nonces
                raise ChainError(
                    f"The {label} transaction {tx_hash} was not mined within "
                    f"{self.receipt_timeout:.0f} s; check that the chain is producing blocks."
                )
            if self.progress is not None and now - reported >= PROGRESS_SECONDS:
                reported = now
                self.progress.waiting(label, tx_hash, now - started)
            time.sleep(next(waits))
        receipt = Receipt(
            tx_hash=str(raw["transactionHash"]),
            block_number=int(raw["blockNumber"], 16),
            status=int(raw["status"], 16),
            gas_used=int(raw["gasUsed"], 16),
            effective_gas_price=int(raw["effectiveGasPrice"], 16),
            logs=tuple(_log_entry(entry) for entry in raw["logs"]),
            contract_address=(
                to_checksum_address(raw["contractAddress"]) if raw.get("contractAddress") else None
            ),
        )
        if receipt.status != 1:
            raise self._replay_failure(tx, receipt, label)
        if self.progress is not None:
            self.progress.mined(label, receipt)
        return receipt

    def _replay_failure(self, tx: dict[str, Any], receipt: Receipt, label: str) -> ChainError:
        try:
            self.request("eth_call", [_as_call(tx), hex(receipt.block_number - 1)], label=label)
        except ContractRevert as exc:
            return exc
        except ChainError:
            pass
        return ChainError(
            f"The {label} transaction {receipt.tx_hash} failed on chain (status 0); "
            "inspect it with the RPC node's trace API."
        )
