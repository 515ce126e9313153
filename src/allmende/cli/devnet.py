"""``allmende devnet``: a local Anvil chain with the Allmende contracts deployed."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from allmende.chain.accounts import dev_account
from allmende.chain.devnet import DEFAULT_PORT, DEFAULT_STATE_DIR, Devnet, DevnetConfig
from allmende.errors import DevnetError

app = typer.Typer(
    help=(
        "Run a local development chain (Anvil) with the Allmende contracts deployed.\n\n"
        "Its chain, balances, contracts, pid file and log live in one state directory "
        "(.devnet/ by default), so `down` followed by `up` brings back the same chain."
    ),
    no_args_is_help=True,
)

_out = Console(highlight=False)

STATE_OPTION = typer.Option(
    DEFAULT_STATE_DIR,
    "--state",
    help="State directory: Anvil's chain state, pid file, log and deployment.json.",
)


@app.command()
def up(
    port: int = typer.Option(DEFAULT_PORT, "--port", help="Port Anvil listens on (127.0.0.1)."),
    state: Path = STATE_OPTION,
) -> None:
    """Start Anvil (or reuse the running one) and deploy Registry and Jobs if they are missing.

    Writes <state>/deployment.json (chain id, RPC URL, addresses, ABIs) for nodes to use.
    """
    devnet = Devnet(DevnetConfig(state_dir=state, port=port))
    deployment = devnet.up()
    _out.print(f"devnet running at {deployment.rpc_url} (chain id {deployment.chain_id})")
    _out.print(f"  Registry  {deployment.registry.address}")
    _out.print(f"  Jobs      {deployment.jobs.address}")
    _out.print(f"  deployment file  {devnet.deployment_path}")


@app.command()
def status(state: Path = STATE_OPTION) -> None:
    """Say whether the devnet runs, and show its chain id, block, contracts and node count.

    Exits with code 1 when it is not running.
    """
    info = Devnet(DevnetConfig(state_dir=state)).status()
    table = Table(show_header=False, box=None)
    table.add_row("running", "yes" if info.running else "no")
    table.add_row("rpc url", info.rpc_url)
    if info.running:
        table.add_row("pid", str(info.pid))
        table.add_row("chain id", str(info.chain_id))
        table.add_row("block", str(info.block_number))
    if info.deployment is not None:
        table.add_row("Registry", info.deployment.registry.address)
        table.add_row("Jobs", info.deployment.jobs.address)
    if info.node_count is not None:
        table.add_row("nodes", str(info.node_count))
    _out.print(table)
    if not info.running:
        raise DevnetError("The devnet is not running; start it with `allmende devnet up`.")


@app.command()
def down(state: Path = STATE_OPTION) -> None:
    """Stop the devnet: SIGTERM so Anvil saves its state, SIGKILL if it does not stop in time."""
    stopped = Devnet(DevnetConfig(state_dir=state)).down()
    _out.print("devnet stopped" if stopped else "devnet was not running")


@app.command()
def accounts(
    count: int = typer.Option(10, "--count", min=1, max=10, help="How many accounts to list."),
) -> None:
    """List the devnet's funded dev accounts with their private keys.

    These keys come from Anvil's public test mnemonic: use them on a local devnet only, e.g.
    `allmende node init --import-key-env KEY` with one of them exported as KEY. Account 0
    deployed the contracts.
    """
    for index in range(count):
        account = dev_account(index)
        typer.echo(f"{index}  {account.address}  0x{bytes(account.key).hex()}")
