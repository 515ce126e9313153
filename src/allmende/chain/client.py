"""A small chain client: one RPC endpoint, one local key, signed transactions, typed reverts.

Every transaction is estimated first (a refusal surfaces as :class:`ContractRevert` carrying the
contract's own message), signed locally, sent, and waited for. Nonces are counted locally under a
lock (so one process can send from several threads); the chain's pending count is read at the
first transaction and again when the chain refuses a nonce (another client sent from the same
key), and that transaction is then sent once more. Fees are read at most once a second.

The calls a node makes every round (``eth_call``, ``eth_getLogs``, transactions) go straight to
the endpoint with :meth:`ChainClient.request` over a kept-alive connection
(:mod:`allmende.chain.rpc`), skipping web3's middleware and contract machinery, which made a view
call about ten times slower (``benchmarks/chain_calls.py``); ``w3`` stays available for the rest.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import requests
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.types import BlockIdentifier

from allmende.chain.compile import CompiledContract
from allmende.chain.deployment import ContractInfo
from allmende.chain.rpc import JsonRpcTransport, RpcBadAnswer, RpcUnreachable
from allmende.chain.signing import CallSigner
from allmende.errors import ChainError, ContractRevert

DEFAULT_RPC_TIMEOUT = 10.0
DEFAULT_RECEIPT_TIMEOUT = 60.0
# Waits between asking for a receipt: a devnet mines a transaction a few milliseconds after
# accepting it, so the first waits are short; a real chain's blocks take seconds, so the last
# wait repeats until the receipt timeout.
RECEIPT_POLL_SECONDS = (0.002, 0.004, 0.008, 0.016, 0.02)
GAS_MARGIN = 1.2  # estimate * margin: room for state that changes between estimate and mining
# Fees are reused this long. maxFeePerGas is twice the base fee plus the tip, which covers the
# base fee's rise over several full blocks.
FEE_CACHE_SECONDS = 1.0
ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """A mined transaction: what it cost and the raw logs it emitted."""

    tx_hash: str
    block_number: int
    status: int
    gas_used: int
    effective_gas_price: int
    logs: tuple[Any, ...]

    @property
    def fee(self) -> int:
        """Wei the sender paid for gas: ``gas_used * effective_gas_price``."""
        return self.gas_used * self.effective_gas_price


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


def _as_call(tx: dict[str, Any]) -> dict[str, Any]:
    """The JSON-RPC call object (``eth_call``, ``eth_estimateGas``) of a transaction."""
    call: dict[str, Any] = {key: tx[key] for key in ("from", "to", "data") if key in tx}
    return {**call, "value": hex(tx.get("value", 0))}


def _is_revert(error: Any) -> bool:
    if not isinstance(error, dict):
        return False
    message = str(error.get("message", ""))
    return error.get("code") == 3 or "revert" in message.lower()


def _revert_from_error(error: dict[str, Any], function: str) -> ContractRevert:
    data = error.get("data")
    if isinstance(data, str) and data.startswith("0x") and len(data) > 2:
        reason = decode_revert(data)
    else:
        reason = str(error.get("message", "")).removeprefix("execution reverted").lstrip(": ")
    return ContractRevert(reason or "reverted without a reason", function=function)


def _revert_from(exc: ContractLogicError, function: str) -> ContractRevert:
    """:func:`_revert_from_error` for a revert web3 raised (``w3`` paths)."""
    return _revert_from_error({"data": exc.data, "message": exc.message or str(exc)}, function)


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
        session = requests.Session()
        session.trust_env = False  # no proxy lookup in the environment on every call
        self.w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}, session=session))
        try:
            self._transport = JsonRpcTransport(rpc_url, timeout=timeout)
        except ValueError:
            raise ChainError(
                f"The RPC URL {rpc_url!r} is not an http(s) URL; fix [chain] rpc_url or the "
                "deployment file."
            ) from None
        self.account: LocalAccount | None = (
            Account.from_key(private_key) if private_key is not None else None
        )
        self.receipt_timeout = receipt_timeout
        self._nonce: int | None = None
        self._lock = threading.Lock()
        self._call_signer: CallSigner | None = None
        self._fees_read: tuple[float, dict[str, int]] | None = None  # (monotonic time, fees)
        self._chain_id: int | None = None

    @property
    def address(self) -> str:
        """The checksummed address of the signing key."""
        if self.account is None:
            raise ChainError("This chain client has no key; pass private_key to send transactions.")
        return str(self.account.address)

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self._rpc(lambda: self.w3.eth.chain_id))
        return self._chain_id

    def block_number(self) -> int:
        return int(self.request("eth_blockNumber", []), 16)

    def block_timestamp(self, block: BlockIdentifier = "latest") -> int:
        return int(self._rpc(lambda: self.w3.eth.get_block(block)["timestamp"]))

    def balance(self, address: str) -> int:
        return int(self._rpc(lambda: self.w3.eth.get_balance(Web3.to_checksum_address(address))))

    def has_code(self, address: str) -> bool:
        return len(self._rpc(lambda: self.w3.eth.get_code(Web3.to_checksum_address(address)))) > 0

    def get_logs(
        self,
        *,
        from_block: int,
        to_block: int,
        addresses: list[str],
        topics: list[bytes] | None = None,
    ) -> list[Any]:
        """Logs of ``addresses`` in the inclusive block range (topics and data as bytes);
        with ``topics``, only the logs whose first topic is one of them."""
        query: dict[str, Any] = {
            "fromBlock": hex(from_block),
            "toBlock": hex(to_block),
            "address": addresses,
        }
        if topics is not None:
            query["topics"] = first_topic_filter(topics)
        raw = self.request("eth_getLogs", [query])
        if not isinstance(raw, list):
            raise ChainError(f"The chain at {self.rpc_url} answered eth_getLogs with {raw!r:.100}.")
        return [_log_entry(entry) for entry in raw]

    def contract(self, info: ContractInfo) -> Contract:
        return self.w3.eth.contract(address=Web3.to_checksum_address(info.address), abi=info.abi)

    def call_data(self, to: str, data: bytes, *, label: str, block: str = "latest") -> bytes:
        """``eth_call`` of raw calldata; the returned bytes, or :class:`ContractRevert`."""
        result = self.request(
            "eth_call", [{"to": to, "data": "0x" + data.hex()}, block], label=label
        )
        return _hex_bytes(result)

    def send_data(self, to: str, data: bytes, *, value: int = 0, label: str) -> Receipt:
        """Sign, send and wait for a transaction with raw calldata (see :meth:`transact`)."""
        return self._send({"to": to, "data": "0x" + data.hex()}, value=value, label=label)

    def call(self, fn: ContractFunction, *, block: BlockIdentifier = "latest") -> Any:
        """Run a view function; a refusal raises :class:`ContractRevert`."""
        try:
            return self._rpc(lambda: fn.call(block_identifier=block))
        except ContractLogicError as exc:
            raise _revert_from(exc, fn.fn_name) from exc

    def transact(self, fn: ContractFunction, *, value: int = 0) -> Receipt:
        """Sign, send and wait for a contract call; raise :class:`ContractRevert` if refused."""
        tx: dict[str, Any] = {"to": fn.address, "data": fn._encode_transaction_data()}
        return self._send(tx, value=value, label=fn.fn_name)

    def send_value(self, to: str, amount: int) -> Receipt:
        """Send plain ether to ``to``."""
        return self._send({"to": Web3.to_checksum_address(to)}, value=amount, label="transfer")

    def deploy(self, compiled: CompiledContract, *args: Any) -> tuple[str, Receipt]:
        """Deploy a compiled contract with constructor ``args``; return (address, receipt)."""
        factory = self.w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        data = factory.constructor(*args).data_in_transaction
        receipt = self._send({"data": data}, value=0, label=f"{compiled.name} constructor")
        raw = self._rpc(lambda: self.w3.eth.get_transaction_receipt(HexStr(receipt.tx_hash)))
        return Web3.to_checksum_address(raw["contractAddress"]), receipt

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """A raw JSON-RPC call (``evm_increaseTime`` and other devnet helpers)."""
        return self.request(method, params or [])

    def request(self, method: str, params: list[Any], *, label: str | None = None) -> Any:
        """One JSON-RPC call, straight to the provider; its ``result``.

        An error answer raises :class:`ContractRevert` when it is a revert and ``label`` (the
        function's name) is given, else :class:`ChainError` with the chain's message.
        """
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
        gas = int(self.request("eth_estimateGas", [_as_call(tx)], label=label), 16)
        tx["gas"] = int(gas * GAS_MARGIN)
        tx.update(self._fees())
        tx_hash = self._send_signed(account, tx)
        return self._wait(tx_hash, tx, label)

    def _send_signed(self, account: LocalAccount, tx: dict[str, Any]) -> str:
        """Sign ``tx`` with the next nonce and send it; its hash."""
        with self._lock:
            for attempt in range(2):
                if self._nonce is None:  # the first transaction, or after a refusal
                    self._nonce = int(
                        self.request("eth_getTransactionCount", [account.address, "pending"]), 16
                    )
                tx["nonce"] = self._nonce
                raw = self._sign(account, tx)
                try:
                    tx_hash = str(self.request("eth_sendRawTransaction", ["0x" + raw.hex()]))
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

    def _sign(self, account: LocalAccount, tx: dict[str, Any]) -> bytes:
        """The raw signed ``tx``: contract calls by :class:`CallSigner`, the rest by eth_account."""
        if not CallSigner.can_sign(tx):
            return bytes(account.sign_transaction(tx).raw_transaction)
        if self._call_signer is None:
            self._call_signer = CallSigner(bytes(account.key))
        return self._call_signer.sign(tx)

    def _fees(self) -> dict[str, int]:
        read = self._fees_read
        if read is not None and time.monotonic() - read[0] < FEE_CACHE_SECONDS:
            return read[1]
        block = self.request("eth_getBlockByNumber", ["latest", False])
        tip = int(self.request("eth_maxPriorityFeePerGas", []), 16)
        base = int(block.get("baseFeePerGas") or "0x0", 16)
        fees = {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}
        self._fees_read = (time.monotonic(), fees)
        return fees

    def _wait(self, tx_hash: str, tx: dict[str, Any], label: str) -> Receipt:
        """Wait for the receipt: asked at once (a devnet mines on arrival), then after each of
        :data:`RECEIPT_POLL_SECONDS` (the last repeated), up to ``receipt_timeout``."""
        deadline = time.monotonic() + self.receipt_timeout
        waits = itertools.chain(RECEIPT_POLL_SECONDS, itertools.repeat(RECEIPT_POLL_SECONDS[-1]))
        while (raw := self.request("eth_getTransactionReceipt", [tx_hash])) is None:
            if time.monotonic() > deadline:
                raise ChainError(
                    f"The {label} transaction {tx_hash} was not mined within "
                    f"{self.receipt_timeout:.0f} s; check that the chain is producing blocks."
                )
            time.sleep(next(waits))
        receipt = Receipt(
            tx_hash=str(raw["transactionHash"]),
            block_number=int(raw["blockNumber"], 16),
            status=int(raw["status"], 16),
            gas_used=int(raw["gasUsed"], 16),
            effective_gas_price=int(raw["effectiveGasPrice"], 16),
            logs=tuple(_log_entry(entry) for entry in raw["logs"]),
        )
        if receipt.status != 1:
            raise self._replay_failure(tx, receipt, label)
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

    def _rpc(self, request: Any) -> Any:
        try:
            return request()
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ChainError(
                f"Cannot reach the chain at {self.rpc_url}; check that it is running "
                "(`allmende devnet status`) and the URL is right."
            ) from exc
        except (Web3RPCError, requests.HTTPError) as exc:
            raise ChainError(f"The chain at {self.rpc_url} refused a request: {exc}.") from exc
