"""The federated job on a second EVM chain: Hardhat's network instead of Anvil.

Everything the nodes do goes through the same JSON-RPC client as on Anvil; what differs between
the two (revert data nested in an object, a reverted transaction reported by
``eth_sendRawTransaction`` itself, idle connections closed after 5 s, a clock that runs ahead
when blocks come faster than one a second) is read generically by the client (README, "Other EVM
chains"). The chain id is Hardhat's 1337, not Anvil's 31337.

The test starts ``hardhat node`` on a free port, deploys with ``allmende contracts deploy`` (the
real CLI, a settings file, the deployer's key from the environment), runs four real nodes (two
trainers, two aggregators of which one is the job owner's) in one ``allmende node run`` fleet,
and a two-round FedAvg job to its end. Proven: every trainer is in every round, the lineage
verifies (``allmende job show``), and the money adds up to the wei.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from fault_nodes import ALLMENDE, write_home
from hardhat_chain import CHAIN_ID, HardhatNode, start_hardhat
from nodes import allmende, free_port

from allmende.chain import Contracts, Deployment, JobStatus, dev_keys
from allmende.chain.events import Credited, Refunded
from allmende.errors import ChainError, ContractRevert
from allmende.net.health import HealthProbe
from allmende.node.config import load_config
from allmende.node.jobspec import parse_jobspec
from allmende.node.submit import submit_job
from waiting import wait_until

ROUNDS = 2
REWARD = 10**16
MIN_STAKE = 10**17  # from the settings file: not the default, so the file is seen to count
STAKE = 10**18  # what a node locks: above the minimum, enough for the spec's aggregator stake
JOB_TIMEOUT = 300.0
START_TIMEOUT = 300.0  # a fleet imports torch once; a loaded 2-core machine takes a while
CLI_TIMEOUT = 300.0
KEY_ENV = "E2E_DEPLOYER_KEY"
FAST_ROLES = {"poll_seconds": 0.3, "refresh_seconds": 1.0}
PARTITION = {"partition": "iid", "num_parts": 2, "seed": 5}
SETTINGS = f"""
min_stake = {MIN_STAKE}
challenge_window = 120
"""


@pytest.fixture(scope="module")
def hardhat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HardhatNode]:
    node = start_hardhat(free_port(), tmp_path_factory.mktemp("hardhat") / "hardhat.log")
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def deployment_path(hardhat: HardhatNode, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deploy")
    settings = root / "contracts.toml"
    settings.write_text(SETTINGS)
    out = root / "deployment.json"
    done = allmende(
        "contracts", "deploy", "--rpc-url", hardhat.rpc_url, "--chain-id", str(CHAIN_ID),
        "--key-env", KEY_ENV, "--settings", str(settings), "--out", str(out),
        env={KEY_ENV: dev_keys(1)[0]}, timeout=CLI_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for label in ("Registry constructor", "Jobs constructor", "set_first_slasher"):
        assert f"{label}: sent 0x" in done.stdout and f"{label}: mined in block" in done.stdout
    return out


def wait_for(condition, what: str, timeout: float = JOB_TIMEOUT) -> None:
    wait_until(condition, what, timeout, every=0.3)


def funded_key(funder: Contracts) -> str:
    key = Account.create().key.to_0x_hex()
    funder.client.send_value(Account.from_key(key).address, 10 * 10**18)
    return key


@contextlib.contextmanager
def fleet(homes: list[Path]) -> Iterator[subprocess.Popen[bytes]]:
    """``allmende node run HOME...`` (one process forks a node per home); killed afterwards."""
    with open(homes[0].parent / "fleet.log", "wb") as log:
        process = subprocess.Popen(
            [ALLMENDE, "node", "run", *map(str, homes)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


def test_the_deployment_names_the_chain_and_the_settings(hardhat, deployment_path) -> None:
    deployment = Deployment.load(deployment_path)
    assert deployment.chain_id == CHAIN_ID and deployment.rpc_url == hardhat.rpc_url
    reader = Contracts.connect(deployment)
    assert reader.registry.min_stake() == MIN_STAKE
    assert reader.registry.admin() == Account.from_key(dev_keys(1)[0]).address


def test_a_deployment_file_whose_contracts_are_not_on_the_chain_is_refused(deployment_path):
    """Hardhat keeps no state: restarted, it is a new chain with the same id and no contracts."""
    deployment = Deployment.load(deployment_path)
    elsewhere = Account.create().address
    forgotten = deployment.model_copy(
        update={"jobs": deployment.jobs.model_copy(update={"address": elsewhere})}
    )
    with pytest.raises(ChainError, match=f"has no Jobs contract at {elsewhere}") as refused:
        Contracts.connect(forgotten)
    assert "deploy again with `allmende contracts deploy`" in str(refused.value)
    Contracts.connect(deployment)  # the real file connects


def test_a_revert_reads_the_same_as_on_anvil(deployment_path) -> None:
    """Hardhat nests revert data in an object, at estimate and when it mines a transaction."""
    poor = Contracts.connect(Deployment.load(deployment_path), Account.create().key.to_0x_hex())
    with pytest.raises(ContractRevert) as estimated:
        poor.registry.request_unbond(1)
    assert estimated.value.reason == "registry: not registered"

    deployer = Contracts.connect(Deployment.load(deployment_path), dev_keys(1)[0])
    client = deployer.client
    call = deployer.registry  # a transaction that passes no estimate: sent with a fixed gas
    data = call._function("request_unbond").encode((1,))  # the deployer is not a node either
    tx = {"from": client.address, "to": call.address, "data": "0x" + data.hex(), "value": 0,
          "chainId": client.chain_id, "gas": 100_000, **client.fees()}  # fmt: skip
    nonce_before = client.request("eth_getTransactionCount", [client.address, "latest"])
    with pytest.raises(ContractRevert) as mined:
        client._send_signed(client.account, tx, "request_unbond")
    assert mined.value.reason == "registry: not registered"
    nonce_after = client.request("eth_getTransactionCount", [client.address, "latest"])
    assert int(nonce_after, 16) == int(nonce_before, 16) + 1  # it was mined, and reverted
    client.send_value(Account.create().address, 1)  # the next nonce is the chain's: accepted


def test_a_federated_job_finishes_with_its_lineage_and_money(deployment_path, tmp_path) -> None:
    deployment = Deployment.load(deployment_path)
    funder = Contracts.connect(deployment, dev_keys(1)[0])
    root = tmp_path / "nodes"
    root.mkdir()
    aggregators = [
        write_home(root / f"aggregator{i}", deployment=deployment_path, key=funded_key(funder),
                   roles=("aggregator",), stake_wei=STAKE, sections={"aggregator": FAST_ROLES})
        for i in range(2)
    ]  # fmt: skip
    trainers = [
        write_home(root / f"trainer{i}", deployment=deployment_path, key=funded_key(funder),
                   roles=("trainer",), stake_wei=STAKE,
                   sections={"trainer": {**FAST_ROLES, "dataset": {**PARTITION, "part": i}}})
        for i in range(2)
    ]  # fmt: skip
    reader = Contracts.connect(deployment)
    with fleet([*aggregators, *trainers]) as process, HealthProbe() as probe:
        urls = [load_config(home).node.endpoint for home in [*aggregators, *trainers]]
        wait_for(lambda: process.poll() is not None or all(map(probe.serving, urls)),
                 "every node to serve", timeout=START_TIMEOUT)  # fmt: skip
        assert process.poll() is None, (root / "fleet.log").read_text()[-3000:]
        members = [_address(home) for home in aggregators]
        spec = parse_jobspec({
            "task": "digits-mlp", "rounds": ROUNDS, "local_epochs": 1, "batch_size": 64,
            "min_trainers": 2, "max_trainers": 2, "quorum": 2, "reward_per_round": REWARD,
            "round_deadline": 120, "seed": 3, "optimizer": {"name": "sgd", "lr": 0.1},
            "aggregation": {"rule": "fedavg", "params": {}}, "committee": {"members": members},
        })  # fmt: skip
        first_block = reader.client.block_number()
        job_id = submit_job(aggregators[0], spec).job_id  # the owner's node aggregates too
        wait_for(lambda: reader.jobs.job(job_id).status != JobStatus.OPEN, "the job to end")
        job = reader.jobs.job(job_id)
        assert job.status == JobStatus.FINISHED, job
        participants = [_address(home) for home in [*aggregators, *trainers]]
        wait_for(lambda: not any(reader.jobs.unclaimed(job_id, a) for a in participants),
                 "every share to be claimed")  # fmt: skip
        latest = reader.client.request("eth_getBlockByNumber", ["latest", False])
        ahead = int(latest["timestamp"], 16) - time.time()  # one second a block, however fast
        print(f"after {int(latest['number'], 16)} blocks the chain's clock is {ahead:+.0f} s "
              "off the wall clock")  # fmt: skip
        shown = allmende("job", "show", str(job_id), "--deployment", str(deployment_path),
                         timeout=CLI_TIMEOUT)  # fmt: skip

    assert shown.returncode == 0, shown.stderr
    assert "lineage check: all" in shown.stdout and "checks passed" in shown.stdout
    assert bytes(job.final_model_hash).hex() in shown.stdout.replace("\n", "")
    for round_ in range(ROUNDS):
        assert reader.jobs.round_result(job_id, round_).included == 0b11

    if reader.jobs.job(job_id).escrow > 0:  # what the rounds did not pay goes back to the owner
        Contracts.connect(deployment, load_key_of(aggregators[0])).jobs.refund(job_id)
    assert reader.jobs.job(job_id).escrow == 0
    events = reader.event_stream(from_block=first_block).fetch(
        first_block, reader.client.block_number()
    )
    credited = sum(e.amount for e in events if isinstance(e, Credited) and e.job_id == job_id)
    refunded = sum(e.amount for e in events if isinstance(e, Refunded) and e.job_id == job_id)
    assert credited > 0
    assert credited + refunded == ROUNDS * REWARD
    balance = reader.client.balance(deployment.jobs.address)
    assert balance == reader.jobs.total_escrow() + reader.jobs.total_owed()
    assert refunded == 0  # every round finalized, and every share was claimed in the window
    assert sum(reader.jobs.owed(address) for address in participants) == credited


def _address(home: Path) -> str:
    return Account.from_key(load_key_of(home)).address


def load_key_of(home: Path) -> str:
    import json

    return str(json.loads((home / "key.json").read_text())["private_key"])
