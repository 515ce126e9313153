"""Interim `make demo`: one training job's money flow on a real local chain.

Starts Anvil in a temporary state directory, deploys Registry and Jobs, registers three nodes
(they stake), and runs a two-round job through the contracts: the owner escrows the reward, the
nodes join as trainers and aggregators, commit update hashes and vote for each round's model
(the vote that completes the quorum finalizes the round), withdraw what they earned, and the
owner takes back the unspent escrow. Every balance is shown before and after. (The hashes stand
in for real model blobs until the federated job lands.)

Run: ``python examples/money_flow.py`` (after ``make setup``).
"""

from __future__ import annotations

import hashlib
import socket
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from allmende.chain import (
    ROLE_AGGREGATOR,
    ROLE_TRAINER,
    Contracts,
    Devnet,
    DevnetConfig,
    Receipt,
    advance_time,
    dev_keys,
)
from allmende.chain.jobs import vote_commitment
from allmende.errors import AllmendeError

ROUNDS = 2
REWARD_PER_ROUND = 10**18  # wei
ROUND_DEADLINE = 3600  # seconds
WEIGHTS = (100, 250, 400)  # each trainer's number of local examples
WEI_PER_ETH = 10**18

console = Console(highlight=False)


def sha256(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}"


def eth(wei: int) -> str:
    return f"{wei / WEI_PER_ETH:,.4f}"


def run_job(owner: Contracts, nodes: list[Contracts], gas: dict[str, int]) -> None:
    def paid(who: Contracts, receipt: Receipt) -> None:
        gas[who.client.address] += receipt.fee

    min_stake = owner.registry.min_stake()
    for i, node in enumerate(nodes):
        paid(
            node,
            node.registry.register(f"http://127.0.0.1:{8100 + i}", ROLE_TRAINER | ROLE_AGGREGATOR),
        )
        paid(node, node.registry.stake(min_stake))
        console.print(f"node {i + 1} {short(node.client.address)} staked {eth(min_stake)} ETH")

    job_id, receipt = owner.jobs.create_job(
        spec_hash=sha256("digits-mlp job spec"),
        model_hash=sha256("model round 0"),
        rounds=ROUNDS,
        reward_per_round=REWARD_PER_ROUND,
        min_trainers=2,
        max_trainers=len(nodes),
        quorum=len(nodes),  # every node votes; a vote after the quorum would be refused
        round_deadline=ROUND_DEADLINE,
        committee=[node.client.address for node in nodes],  # the owner names its aggregators
        committee_size=len(nodes),
        weight_cap=max(WEIGHTS),  # declared weights, capped
    )
    paid(owner, receipt)
    console.print(f"job {job_id} created, escrow {eth(ROUNDS * REWARD_PER_ROUND)} ETH")
    for node in nodes:
        paid(node, node.jobs.join(job_id, ROLE_TRAINER))
        paid(node, node.jobs.join(job_id, ROLE_AGGREGATOR))

    everyone = (1 << len(nodes)) - 1  # bitmap: every trainer included
    for round_ in range(ROUNDS):
        for node, weight in zip(nodes, WEIGHTS, strict=True):
            update = sha256(f"update of {node.client.address} in round {round_}")
            paid(node, node.jobs.commit_update(job_id, round_, update, weight))
        new_model = sha256(f"model round {round_ + 1}")
        total = sum(WEIGHTS)
        salt = sha256(f"secret of round {round_}")
        for node in nodes:  # every member commits its vote, hidden...
            secret = vote_commitment(new_model, everyone, total, salt, node.client.address)
            paid(node, node.jobs.commit_vote(job_id, round_, secret))
        for node in nodes:  # ...then reveals it; the last reveal reaches the quorum
            paid(node, node.jobs.reveal(job_id, round_, new_model, everyone, total, salt))
        result = owner.jobs.round_result(job_id, round_)
        for node in nodes:  # each claims its trainer and its aggregator share
            paid(node, node.jobs.claim(job_id, round_, result))
            paid(node, node.jobs.claim_vote(job_id, round_))
        console.print(
            f"round {round_} final: model {result.model_hash.hex()[:16]}…, "
            f"total weight {result.total_weight}; shares claimed"
        )

    # the rounding dust stays reserved for claims until the challenge window passed
    advance_time(owner.client, owner.jobs.challenge_window() + 1)
    unspent = owner.jobs.job(job_id).escrow
    if unspent > 0:
        paid(owner, owner.jobs.refund(job_id))
    console.print(f"unspent escrow refunded to the owner: {unspent} wei")
    for account in [owner, *nodes]:
        if account.jobs.owed(account.client.address) > 0:
            paid(account, account.jobs.withdraw())
    console.print(f"job {job_id} finished; everyone withdrew what they earned")


def balance_table(
    accounts: dict[str, Contracts],
    before: dict[str, int],
    gas: dict[str, int],
    *,
    staked: dict[str, int],
    escrowed: dict[str, int],
) -> Table:
    """Before and after, and the change split into its parts: stake, escrow, earnings, gas."""
    table = Table(title="Balances (ETH)")
    for column in ("account", "before", "after", "staked", "escrowed", "earned", "gas"):
        table.add_column(column, justify="left" if column == "account" else "right")
    for name, contracts in accounts.items():
        address = contracts.client.address
        after = contracts.client.balance(address)
        earned = after - before[address] + gas[address] + staked[address] + escrowed[address]
        table.add_row(
            name,
            eth(before[address]),
            eth(after),
            eth(-staked[address]),
            eth(-escrowed[address]),
            eth(earned),
            eth(-gas[address]),
        )
    return table


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="allmende-demo-") as state:
        devnet = Devnet(DevnetConfig(state_dir=Path(state), port=free_port()))
        try:
            deployment = devnet.up()
            console.print(f"devnet at {deployment.rpc_url}")
            console.print(f"  Registry {deployment.registry.address}")
            console.print(f"  Jobs     {deployment.jobs.address}")
            keys = dev_keys(5)
            owner = Contracts.connect(deployment, keys[4])
            nodes = [Contracts.connect(deployment, key) for key in keys[1:4]]
            accounts = {"job owner": owner} | {f"node {i + 1}": n for i, n in enumerate(nodes)}
            before = {
                c.client.address: c.client.balance(c.client.address) for c in accounts.values()
            }
            gas: dict[str, int] = defaultdict(int)
            run_job(owner, nodes, gas)
            min_stake = owner.registry.min_stake()
            staked = defaultdict(int, {n.client.address: min_stake for n in nodes})
            escrowed = defaultdict(int, {owner.client.address: ROUNDS * REWARD_PER_ROUND})
            console.print(balance_table(accounts, before, gas, staked=staked, escrowed=escrowed))
            in_registry = owner.client.balance(deployment.registry.address)
            in_jobs = owner.client.balance(deployment.jobs.address)
            console.print(
                f"Registry holds {eth(in_registry)} ETH of stake; Jobs {eth(in_jobs)} ETH"
            )
        except AllmendeError as exc:
            console.print(f"[bold red]demo failed:[/] {exc}")
            return 1
        finally:
            devnet.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
