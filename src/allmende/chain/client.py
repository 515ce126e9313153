"""A small web3.py client: one RPC endpoint, one local key, signed transactions, typed reverts.

Every transaction is estimated first (a refusal surfaces as :class:`ContractRevert` carrying the
contract's own message), signed locally, sent, and waited for. Nonces are counted locally under a
lock (so one process can send from several threads) and never below the chain's pending count.
"""

from __future__ import annotations

import threading
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
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception, Web3RPCError
from web3.types import BlockIdentifier

from allmende.chain.compile import CompiledContract
from allmende.chain.deployment import ContractInfo
from allmende.errors import ChainError, ContractRevert

DEFAULT_RPC_TIMEOUT = 10.0
DEFAULT_RECEIPT_TIMEOUT = 60.0
GAS_MARGIN = 1.2  # estimate * margin: room for state that changes between estimate and mining
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


def _revert_from(exc: ContractLogicError, function: str) -> ContractRevert:
    if isinstance(exc.data, str) and exc.data.startswith("0x"):
        reason = decode_revert(exc.data)
    else:
        reason = str(exc.message or exc).removeprefix("execution reverted: ").strip()
    return ContractRevert(reason or "reverted without a reason", function=function)


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
        self.w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
        self.account: LocalAccount | None = (
            Account.from_key(private_key) if private_key is not None else None
        )
        self.receipt_timeout = receipt_timeout
        self._nonce: int | None = None
        self._lock = threading.Lock()
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
        return int(self._rpc(lambda: self.w3.eth.block_number))

    def block_timestamp(self, block: BlockIdentifier = "latest") -> int:
        return int(self._rpc(lambda: self.w3.eth.get_block(block)["timestamp"]))

    def balance(self, address: str) -> int:
        return int(self._rpc(lambda: self.w3.eth.get_balance(Web3.to_checksum_address(address))))

    def has_code(self, address: str) -> bool:
        return len(self._rpc(lambda: self.w3.eth.get_code(Web3.to_checksum_address(address)))) > 0

    def get_logs(self, *, from_block: int, to_block: int, addresses: list[str]) -> list[Any]:
        """Raw logs of ``addresses`` in the inclusive block range."""
        query = {"fromBlock": from_block, "toBlock": to_block, "address": addresses}
        return list(self._rpc(lambda: self.w3.eth.get_logs(query)))  # type: ignore[arg-type]

    def contract(self, info: ContractInfo) -> Contract:
        return self.w3.eth.contract(address=Web3.to_checksum_address(info.address), abi=info.abi)

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
        response = self._rpc(lambda: self.w3.provider.make_request(method, params or []))  # type: ignore[arg-type]
        if "error" in response:
            raise ChainError(f"The RPC call {method} failed: {response['error']}.")
        return response.get("result")

    def _send(self, tx: dict[str, Any], *, value: int, label: str) -> Receipt:
        account = self.account
        if account is None:
            raise ChainError("This chain client has no key; pass private_key to send transactions.")
        tx = {**tx, "from": account.address, "value": value, "chainId": self.chain_id}
        try:
            gas = self._rpc(lambda: self.w3.eth.estimate_gas(tx))  # type: ignore[arg-type]
        except ContractLogicError as exc:
            raise _revert_from(exc, label) from exc
        tx["gas"] = int(gas * GAS_MARGIN)
        tx.update(self._fees())
        with self._lock:
            # The local count covers our own unmined transactions; the chain's pending count
            # covers transactions another client sent from the same key meanwhile.
            pending = int(
                self._rpc(lambda: self.w3.eth.get_transaction_count(account.address, "pending"))
            )
            self._nonce = max(self._nonce or 0, pending)
            tx["nonce"] = self._nonce
            signed = account.sign_transaction(tx)
            try:
                tx_hash = self._rpc(
                    lambda: self.w3.eth.send_raw_transaction(signed.raw_transaction)
                )
            except BaseException:
                self._nonce = None  # unknown whether it went out: re-read from chain next time
                raise
            self._nonce += 1
        return self._wait(tx_hash, tx, label)

    def _fees(self) -> dict[str, int]:
        block = self._rpc(lambda: self.w3.eth.get_block("latest"))
        tip = int(self._rpc(lambda: self.w3.eth.max_priority_fee))
        base = int(block.get("baseFeePerGas", 0))
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def _wait(self, tx_hash: Any, tx: dict[str, Any], label: str) -> Receipt:
        try:
            raw = self._rpc(
                lambda: self.w3.eth.wait_for_transaction_receipt(
                    tx_hash, timeout=self.receipt_timeout
                )
            )
        except TimeExhausted as exc:
            raise ChainError(
                f"The {label} transaction {tx_hash.to_0x_hex()} was not mined within "
                f"{self.receipt_timeout:.0f} s; check that the chain is producing blocks."
            ) from exc
        receipt = Receipt(
            tx_hash=raw["transactionHash"].to_0x_hex(),
            block_number=int(raw["blockNumber"]),
            status=int(raw["status"]),
            gas_used=int(raw["gasUsed"]),
            effective_gas_price=int(raw["effectiveGasPrice"]),
            logs=tuple(raw["logs"]),
        )
        if receipt.status != 1:
            raise self._replay_failure(tx, receipt, label)
        return receipt

    def _replay_failure(self, tx: dict[str, Any], receipt: Receipt, label: str) -> ChainError:
        call = {key: tx[key] for key in ("from", "to", "data", "value") if key in tx}
        try:
            self.w3.eth.call(call, block_identifier=receipt.block_number - 1)  # type: ignore[arg-type]
        except ContractLogicError as exc:
            return _revert_from(exc, label)
        except Web3Exception:
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
        except Web3RPCError as exc:
            raise ChainError(f"The chain at {self.rpc_url} refused a request: {exc}.") from exc
