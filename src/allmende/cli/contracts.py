"""``allmende contracts``: deploy the Allmende contracts to any EVM chain.

``deploy`` sends three transactions from the deployer's key (Registry, Jobs, and making Jobs the
Registry's first slasher) and writes the deployment file that ``allmende node init --deployment``
and every other command read. The devnet does the same for itself (``allmende devnet up``).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.status import Status

from allmende.chain.client import DEFAULT_RPC_TIMEOUT, ChainClient, Receipt
from allmende.chain.deploy import (
    ContractSettings,
    deploy_contracts,
    deployment_gas,
    deployment_is_live,
    load_contract_settings,
)
from allmende.chain.deployment import DEPLOYMENT_FILE
from allmende.errors import ChainError, ConfigError

app = typer.Typer(
    help="Deploy the Allmende contracts (Registry and Jobs) to an EVM chain.",
    no_args_is_help=True,
)

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)
DEFAULT_PASSWORD_ENV = "ALLMENDE_KEY_PASSWORD"
DEFAULT_RECEIPT_TIMEOUT = 600.0  # a busy public chain may take minutes to include a transaction


class _Progress:
    """Prints each transaction as it is sent and mined; a spinner while it waits (on a terminal)."""

    def __init__(self) -> None:
        self._status: Status | None = None

    def sent(self, label: str, tx_hash: str) -> None:
        _out.print(f"  {label}: sent {tx_hash}")
        if _err.is_terminal:
            self._status = _err.status(f"  waiting for the {label} receipt")
            self._status.start()

    def waiting(self, label: str, tx_hash: str, seconds: float) -> None:
        if self._status is not None:
            self._status.update(f"  waiting for the {label} receipt ({seconds:.0f} s)")

    def mined(self, label: str, receipt: Receipt) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        _out.print(
            f"  {label}: mined in block {receipt.block_number}, gas {receipt.gas_used}, "
            f"fee {receipt.fee} wei"
        )

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def _deployer_key(key_env: str | None, keystore: Path | None, password_env: str,
                  chain_id: int) -> str:  # fmt: skip
    """The deployer's private key, from the environment variable or the keystore file."""
    if (key_env is None) == (keystore is None):
        raise ConfigError("Give exactly one of --key-env VAR or --keystore FILE for the deployer.")
    if key_env is not None:
        value = os.environ.get(key_env, "").strip()
        if not value:
            raise ConfigError(f"${key_env} is not set; export the deployer's private key there.")
        return value
    from allmende.node.keystore import load_key

    assert keystore is not None
    prompt = None
    if os.isatty(0):

        def prompt() -> str:
            return str(typer.prompt("Keystore password", hide_input=True))

    key = load_key(keystore, chain_id=chain_id, password_env=password_env, prompt=prompt)
    return "0x" + bytes(key.key).hex()


DEPLOY_HELP = (
    "Deploy Registry and Jobs from the deployer's key and write the deployment file.\n\n"
    "The deployer becomes the Registry's admin. Before anything is sent, the endpoint's chain id "
    "must equal --chain-id and the deployer's balance must cover the three transactions' "
    "estimated cost. Each transaction is shown as it is sent and mined.\n\n"
    "Then point nodes at the file: allmende node init HOME --deployment FILE.\n\n"
    "Example: DEPLOYER_KEY=0x... allmende contracts deploy --rpc-url http://127.0.0.1:8545 "
    "--chain-id 31337 --key-env DEPLOYER_KEY --settings examples/contracts.toml "
    "--out net/deployment.json"
)


@app.command(help=DEPLOY_HELP)
def deploy(
    rpc_url: str = typer.Option(
        ..., "--rpc-url", help="The chain's JSON-RPC endpoint (http or https)."
    ),
    chain_id: int = typer.Option(
        ...,
        "--chain-id",
        help="The chain id you mean to deploy to; the endpoint must report it (a guard against "
        "the wrong URL).",
    ),
    key_env: str | None = typer.Option(
        None, "--key-env", help="An environment variable holding the deployer's private key."
    ),
    keystore: Path | None = typer.Option(
        None,
        "--keystore",
        help="A keystore file (Ethereum V3 JSON, or a node home's key.json) of the deployer.",
    ),
    password_env: str = typer.Option(
        DEFAULT_PASSWORD_ENV,
        "--password-env",
        help="The environment variable with the keystore's password (else it is prompted for).",
    ),
    settings: Path | None = typer.Option(
        None,
        "--settings",
        help="A TOML file of contract settings (examples/contracts.toml lists every key); "
        "keys left out keep their defaults.",
    ),
    out: Path = typer.Option(
        Path(DEPLOYMENT_FILE), "--out", help="Where to write the deployment file."
    ),
    force: bool = typer.Option(
        False, "--force", help="Overwrite an existing deployment file at --out."
    ),
    receipt_timeout: float = typer.Option(
        DEFAULT_RECEIPT_TIMEOUT, "--receipt-timeout", help="Seconds to wait for each receipt."
    ),
) -> None:
    if out.exists() and not force:
        raise ConfigError(
            f"{out} exists already; it may describe contracts that nodes use. Pass another "
            "--out, or --force to overwrite it."
        )
    contract_settings = load_contract_settings(settings) if settings else ContractSettings()
    probe = ChainClient(rpc_url, timeout=DEFAULT_RPC_TIMEOUT)
    found = probe.chain_id
    if found != chain_id:
        raise ChainError(
            f"The chain at {rpc_url} has id {found}, not {chain_id}; check --rpc-url and "
            "--chain-id."
        )
    key = _deployer_key(key_env, keystore, password_env, chain_id)
    try:
        client = ChainClient(rpc_url, key, receipt_timeout=receipt_timeout)
    except ValueError:
        raise ConfigError("The deployer's key is not a private key (64 hex digits).") from None
    gas = deployment_gas(client, contract_settings)
    price = client.fees()["maxFeePerGas"]
    balance = client.balance(client.address)
    if balance < gas * price:
        raise ChainError(
            f"The deployer {client.address} holds {balance} wei on chain {chain_id}, but the "
            f"deployment may cost up to {gas * price} wei ({gas} gas at {price} wei); fund it "
            "and retry."
        )
    _out.print(f"deploying from {client.address} to chain {chain_id} at {rpc_url}")
    progress = _Progress()
    client.progress = progress
    try:
        deployment = deploy_contracts(client, contract_settings)
    finally:
        progress.close()
    if not deployment_is_live(client, deployment):
        raise ChainError(
            f"The contracts deployed at {deployment.registry.address} and "
            f"{deployment.jobs.address} have no code on {rpc_url}; the chain may have rolled "
            "back: deploy again."
        )
    deployment.save(out)
    _out.print(f"  Registry  {deployment.registry.address}")
    _out.print(f"  Jobs      {deployment.jobs.address}")
    _out.print(f"deployment file {out} written (first block {deployment.deploy_block})")
