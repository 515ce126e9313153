"""The whole money flow of a job through ``allmende.chain`` against a real Anvil.

Every balance change is asserted to the wei: value moved by the contracts, minus the gas each
account paid according to its receipts.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import time
from collections import defaultdict

import pytest
from eth_account import Account

from allmende.chain import (
    ROLE_AGGREGATOR,
    ROLE_TRAINER,
    Contracts,
    Deployment,
    JobStatus,
    Receipt,
    advance_time,
    dev_keys,
)
from allmende.chain.events import (
    AggregatorSlashed,
    Credited,
    JobCreated,
    JobFinished,
    Proposed,
    RoundFinalized,
    Slashed,
)
from allmende.chain.heads import HeadWatcher, LogFilter, websocket_url
from allmende.chain.jobs import vote_commitment
from allmende.errors import ContractRevert

REWARD = 10**18
ROUNDS = 2
DEADLINE = 600


def h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


class Ledger:
    """Gas each account paid, from its receipts."""

    def __init__(self) -> None:
        self.fees: dict[str, int] = defaultdict(int)

    def paid(self, who: Contracts, receipt: Receipt) -> Receipt:
        self.fees[who.client.address] += receipt.fee
        return receipt


def round_payouts(
    reward: int, bps: int, agreeing: list[str], weights: dict[str, int]
) -> dict[str, int]:
    """The README's payout rule, written out independently of the contract."""
    aggregator_pot = reward * bps // 10_000
    payouts = {a: aggregator_pot // len(agreeing) for a in agreeing}
    trainer_pot = reward - aggregator_pot
    total_weight = sum(weights.values())
    for trainer, weight in weights.items():
        payouts[trainer] = trainer_pot * weight // total_weight
    return payouts


def test_job_money_flow_pays_exactly_and_slashes_the_dissenter(devnet) -> None:
    owner = devnet.contracts(devnet.new_key())
    trainers = [devnet.contracts(devnet.new_key()) for _ in range(3)]
    aggregators = [devnet.contracts(devnet.new_key()) for _ in range(3)]
    anyone = devnet.contracts(devnet.new_key())
    everyone = [owner, *trainers, *aggregators, anyone]
    ledger = Ledger()
    min_stake = owner.registry.min_stake()
    bps = owner.jobs.aggregator_share_bps()
    slash_amount = owner.jobs.slash_amount()
    assert slash_amount > 0 and 0 < bps < 10_000

    # Registration and stake: each node's balance drops by exactly the stake plus its gas.
    start = {c.client.address: c.client.balance(c.client.address) for c in everyone}
    for i, node in enumerate(trainers + aggregators):
        role = ROLE_TRAINER if node in trainers else ROLE_AGGREGATOR
        ledger.paid(node, node.registry.register(f"http://127.0.0.1:{7000 + i}", role))
        ledger.paid(node, node.registry.stake(min_stake))
        assert node.registry.is_active(node.client.address)
        assert node.registry.node(node.client.address).stake == min_stake

    # Create the job: the escrow leaves the owner.
    job_id, receipt = owner.jobs.create_job(
        spec_hash=h("spec"),
        model_hash=h("model-0"),
        rounds=ROUNDS,
        reward_per_round=REWARD,
        min_trainers=2,
        max_trainers=3,
        quorum=2,
        round_deadline=DEADLINE,
        committee=[a.client.address for a in aggregators],  # named by the owner
        committee_size=3,
        aggregator_stake=slash_amount,  # locked at join; a slash takes it all
        weight_cap=10,  # declared weights, at most 10 each
    )
    ledger.paid(owner, receipt)
    created = [e for e in owner.events(receipt) if isinstance(e, JobCreated)]
    assert created[0].job_id == job_id and created[0].owner == owner.client.address
    assert owner.jobs.job(job_id).escrow == ROUNDS * REWARD
    for node in trainers:
        ledger.paid(node, node.jobs.join(job_id, ROLE_TRAINER))
    for node in aggregators:
        ledger.paid(node, node.jobs.join(job_id, ROLE_AGGREGATOR))
    assert owner.jobs.trainers(job_id) == [t.client.address for t in trainers]
    assert owner.jobs.aggregators(job_id) == [a.client.address for a in aggregators]
    with pytest.raises(ContractRevert, match="jobs: "):
        anyone.jobs.join(job_id, ROLE_TRAINER)  # not a registered, staked node

    # Round 0: three commits; the committee commits its votes, then reveals: the third
    # aggregator dissents before the other two reach the quorum, the quorum reveal finalizes
    # the round, and a challenge slashes the dissenter.
    weights0 = {t.client.address: w for t, w in zip(trainers, (1, 2, 3), strict=True)}
    for node in trainers:
        w = weights0[node.client.address]
        ledger.paid(node, node.jobs.commit_update(job_id, 0, h(f"update-0-{w}"), w))

    def vote(round_: int, ballots: list[tuple[Contracts, bytes, int, int]]) -> Receipt:
        for node, model, included, total in ballots:
            secret = vote_commitment(
                model, included, total, h(f"salt {round_}"), node.client.address
            )
            ledger.paid(node, node.jobs.commit_vote(job_id, round_, secret))
        if not anyone.jobs.reveals_open(job_id):
            advance_time(anyone.client, DEADLINE + 1)  # the vote-commit period passes
        receipts = [
            ledger.paid(node, node.jobs.reveal(job_id, round_, m, inc, t, h(f"salt {round_}")))
            for node, m, inc, t in ballots
        ]
        return receipts[-1]

    with pytest.raises(ContractRevert, match="jobs: "):
        trainers[0].jobs.commit_vote(job_id, 0, h("a vote"))  # a trainer cannot vote
    receipt = vote(0, [
        (aggregators[0], h("model-1"), 0b111, 6), (aggregators[2], h("wrong"), 0b111, 6),
        (aggregators[1], h("model-1"), 0b111, 6),
    ])  # fmt: skip
    assert owner.jobs.votes(job_id, 0, h("model-1"), 0b111, 6) == 2  # in attempt 0
    events = anyone.events(receipt)
    assert isinstance(events[0], Proposed)  # the reveal, then the round's finalization
    assert [e.round for e in events if isinstance(e, RoundFinalized)] == [0]
    assert not [e for e in events if isinstance(e, Credited)]  # shares are claimed
    result0 = owner.jobs.round_result(job_id, 0)
    assert (result0.model_hash, result0.included, result0.total_weight) == (h("model-1"), 7, 6)
    agreeing0 = [a.client.address for a in aggregators[:2]]
    expected0 = round_payouts(REWARD, bps, agreeing0, weights0)
    # what each could claim, as `node status` shows it: exactly what its claim then pays
    unclaimed0 = {
        node.client.address: anyone.jobs.unclaimed(job_id, node.client.address)
        for node in [*trainers, *aggregators]
    }
    assert {a: sum(w for _, _, w in shares) for a, shares in unclaimed0.items() if shares} == (
        expected0
    )
    assert unclaimed0[aggregators[2].client.address] == []  # its reveal was not the result
    credited0 = {}
    for node in trainers:
        receipt = ledger.paid(node, node.jobs.claim(job_id, 0, result0))
        credited0.update(
            {e.account: e.amount for e in anyone.events(receipt) if isinstance(e, Credited)}
        )
    for node in aggregators[:2]:
        receipt = ledger.paid(node, node.jobs.claim_vote(job_id, 0))
        credited0.update(
            {e.account: e.amount for e in anyone.events(receipt) if isinstance(e, Credited)}
        )
    assert credited0 == expected0
    assert all(anyone.jobs.unclaimed(job_id, a) == [] for a in unclaimed0)  # claimed once
    with pytest.raises(ContractRevert, match="jobs: already claimed"):
        trainers[0].jobs.claim(job_id, 0, result0)
    assert owner.jobs.provably_wrong(job_id, aggregators[2].client.address)
    receipt = ledger.paid(owner, owner.jobs.challenge(job_id, aggregators[2].client.address))
    events = anyone.events(receipt)
    slashed = [e for e in events if isinstance(e, AggregatorSlashed)]
    assert [(e.aggregator, e.amount) for e in slashed] == [
        (aggregators[2].client.address, slash_amount)
    ]
    assert any(isinstance(e, Slashed) and e.beneficiary == owner.client.address for e in events)
    assert owner.registry.owed(owner.client.address) == slash_amount
    assert owner.registry.node(aggregators[2].client.address).stake == min_stake - slash_amount
    assert owner.registry.locked(aggregators[2].client.address) == 0  # it was slashed from there
    assert not owner.jobs.is_aggregator(job_id, aggregators[2].client.address)  # and left

    # Round 1: only two trainers commit; after the deadline their commits suffice.
    weights1 = {trainers[0].client.address: 5, trainers[1].client.address: 7}
    for node in trainers[:2]:
        w = weights1[node.client.address]
        ledger.paid(node, node.jobs.commit_update(job_id, 1, h(f"update-1-{w}"), w))
    advance_time(anyone.client, DEADLINE + 1)
    with pytest.raises(ContractRevert, match="jobs: "):
        trainers[2].jobs.commit_update(job_id, 1, h("late"), 1)  # too late
    receipt = vote(1, [(a, h("model-2"), 0b011, 12) for a in aggregators[:2]])
    with pytest.raises(ContractRevert, match="jobs: "):
        aggregators[2].jobs.commit_vote(job_id, 1, h("a vote"))  # removed, and too late
    finished = [e for e in anyone.events(receipt) if isinstance(e, JobFinished)]
    assert finished and finished[0].final_model_hash == h("model-2")
    job = owner.jobs.job(job_id)
    assert job.status == JobStatus.FINISHED and job.final_model_hash == h("model-2")
    assert [e.round for e in anyone.events(receipt) if isinstance(e, RoundFinalized)] == [1]
    result1 = owner.jobs.round_result(job_id, 1)
    for node in trainers[:2]:
        ledger.paid(node, node.jobs.claim(job_id, 1, result1))
    for node in aggregators[:2]:
        ledger.paid(node, node.jobs.claim_vote(job_id, 1))
    expected1 = round_payouts(REWARD, bps, agreeing0, weights1)
    assert owner.jobs.reserved(job_id) == 2 * REWARD - sum(expected0.values()) - sum(
        expected1.values()
    )

    # Refund: once the challenge window passed (claims close then), the owner gets the escrow
    # nobody earned (rounding dust included).
    paid_out = sum(expected0.values()) + sum(expected1.values())
    with pytest.raises(ContractRevert, match="jobs: nothing to refund"):
        owner.jobs.refund(job_id)  # all rounds finalized: only dust is left, and it waits
    advance_time(anyone.client, owner.jobs.challenge_window() + 1)
    ledger.paid(owner, owner.jobs.refund(job_id))
    assert owner.jobs.owed(owner.client.address) == ROUNDS * REWARD - paid_out
    with pytest.raises(ContractRevert, match="jobs: "):
        owner.jobs.refund(job_id)  # only once

    # Everyone withdraws what they are owed; the owner also collects the slashed stake.
    earned: dict[str, int] = defaultdict(int)
    for payouts in (expected0, expected1):
        for account, amount in payouts.items():
            earned[account] += amount
    earned[owner.client.address] += ROUNDS * REWARD - paid_out + slash_amount
    for node in [owner, *trainers, *aggregators[:2]]:
        ledger.paid(node, node.jobs.withdraw())
        assert node.jobs.owed(node.client.address) == 0
    ledger.paid(owner, owner.registry.withdraw())
    with pytest.raises(ContractRevert, match="jobs: "):
        aggregators[2].jobs.withdraw()  # the dissenter earned nothing

    for node in everyone:
        address = node.client.address
        staked = min_stake if node in trainers + aggregators else 0
        escrowed = ROUNDS * REWARD if node is owner else 0
        expected = start[address] - ledger.fees[address] - staked - escrowed + earned[address]
        assert node.client.balance(address) == expected, address


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "allmende.cli.main", "devnet", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_devnet_restart_keeps_chain_balances_and_contracts(devnet_slot) -> None:
    state = devnet_slot.state_dir
    port = str(devnet_slot.port)
    try:
        first = run_cli("up", "--port", port, "--state", str(state))
        assert first.returncode == 0, first.stderr
        deployment = Deployment.load(state / "deployment.json")
        sender = Contracts.connect(deployment, dev_keys(2)[1])
        receiver = Account.create().address
        sender.client.send_value(receiver, 12345)
        sender.registry.register("http://127.0.0.1:7999", ROLE_TRAINER)
        sender_balance = sender.client.balance(sender.client.address)
        block = sender.client.block_number()

        assert run_cli("down", "--state", str(state)).returncode == 0
        assert run_cli("status", "--state", str(state)).returncode == 1
        second = run_cli("up", "--port", port, "--state", str(state))
        assert second.returncode == 0, second.stderr

        again = Deployment.load(state / "deployment.json")
        assert again.registry.address == deployment.registry.address
        assert again.jobs.address == deployment.jobs.address
        reader = Contracts.connect(again)
        assert reader.client.block_number() >= block
        assert reader.client.balance(receiver) == 12345
        assert reader.client.balance(sender.client.address) == sender_balance
        assert reader.registry.node(sender.client.address).endpoint == "http://127.0.0.1:7999"
        status = run_cli("status", "--state", str(state))
        assert status.returncode == 0 and "nodes" in status.stdout
    finally:
        run_cli("down", "--state", str(state))


def test_the_chain_client_reads_balances_and_code_as_web3_does(devnet) -> None:
    from allmende.chain import ChainClient

    client = ChainClient(devnet.rpc_url, devnet.keys[4])
    sink = Account.create().address
    assert client.chain_id == client.w3.eth.chain_id == devnet.deployment.chain_id
    assert client.has_code(devnet.deployment.jobs.address)
    assert not client.has_code(sink)
    before = client.balance(client.address)
    receipt = client.send_value(sink.lower(), 7)  # any case is accepted
    assert client.balance(sink) == client.w3.eth.get_balance(sink) == 7
    assert client.balance(client.address) == before - 7 - receipt.fee
    assert receipt.contract_address is None


def test_event_stream_follows_the_real_chain_and_resumes_from_its_cursor(devnet, tmp_path) -> None:
    from allmende.chain import ChainClient, EventStream
    from allmende.chain.events import NodeRegistered, NodeUpdated, Staked

    node = devnet.contracts(devnet.new_key())
    me = node.client.address
    cursor = tmp_path / "cursor"
    start = node.client.block_number() + 1
    first = node.event_stream(from_block=start, cursor_file=cursor, chunk_blocks=1)
    node.registry.register("http://127.0.0.1:7100", ROLE_TRAINER)
    node.registry.stake(5)
    seen = []
    while not first.caught_up():
        seen += [e for e in first.poll() if getattr(e, "node", None) == me]
    assert [type(e) for e in seen] == [NodeRegistered, Staked]
    assert seen[1].amount == 5 and seen[0].block_number < seen[1].block_number
    first.commit()

    node.registry.register("http://127.0.0.1:7101", ROLE_TRAINER)
    resumed = node.event_stream(from_block=start, cursor_file=cursor)
    later = [e for e in resumed.poll() if getattr(e, "node", None) == me]
    assert [type(e) for e in later] == [NodeUpdated]
    assert later[0].endpoint == "http://127.0.0.1:7101"

    dead = EventStream(ChainClient("http://127.0.0.1:9", timeout=0.5), node.decoder)
    assert dead.poll() == [] and dead.next_block == 0  # connection refused: logged, not raised


def test_a_stream_of_some_events_gets_only_those_from_the_chain(devnet) -> None:
    """The topic filter goes to the real chain's eth_getLogs: the other logs never arrive."""
    from allmende.chain import EventDecoder, EventStream
    from allmende.chain.events import NodeUpdated, Staked

    node = devnet.contracts(devnet.new_key())
    start = node.client.block_number() + 1
    node.registry.register("http://127.0.0.1:7100", ROLE_TRAINER)
    node.registry.stake(5)
    node.registry.register("http://127.0.0.1:7101", ROLE_TRAINER)
    decoder = EventDecoder(registry=devnet.deployment.registry, only=(Staked, NodeUpdated))
    stream = EventStream(node.client, decoder, from_block=start)
    raw = node.client.get_logs(
        from_block=start, to_block=node.client.block_number(), addresses=decoder.addresses,
        topics=decoder.topics,
    )  # fmt: skip
    assert len(raw) == 2  # NodeRegistered was left out by the chain, not by the decoder
    mine = [e for e in stream.poll() if getattr(e, "node", None) == node.client.address]
    assert [type(e) for e in mine] == [Staked, NodeUpdated]


def test_follow_async_yields_events_without_blocking_the_loop(devnet) -> None:
    import asyncio

    from allmende.chain.events import Staked

    node = devnet.contracts(devnet.new_key())
    node.registry.register("http://127.0.0.1:7200", ROLE_TRAINER)
    start = node.client.block_number() + 1

    async def main() -> Staked:
        stream = node.event_stream(from_block=start, poll_interval=0.05)
        stop = asyncio.Event()
        await asyncio.to_thread(node.registry.stake, 7)
        async for event in stream.follow_async(stop):
            if isinstance(event, Staked) and event.node == node.client.address:
                stop.set()
                return event
        raise AssertionError("the stream ended without the Staked event")

    event = asyncio.run(asyncio.wait_for(main(), timeout=60))
    assert event.amount == 7 and event.total == 7


def test_nonces_hold_across_threads_and_across_clients_of_one_key(devnet) -> None:
    from concurrent.futures import ThreadPoolExecutor

    key = devnet.new_key()
    first, second = devnet.contracts(key), devnet.contracts(key)
    sink = Account.create().address
    with ThreadPoolExecutor(max_workers=4) as pool:
        receipts = list(pool.map(lambda _: first.client.send_value(sink, 1), range(8)))
    assert all(r.status == 1 for r in receipts)
    second.client.send_value(sink, 1)  # a second client with the same key, after the first
    first.client.send_value(sink, 1)  # and the first again: its cached nonce must not collide
    assert first.client.balance(sink) == 10
    count = first.client.w3.eth.get_transaction_count(first.client.address)
    assert count == 10


async def subscribed_watcher(
    rpc_url: str, logs: LogFilter | None = None
) -> tuple[HeadWatcher, asyncio.Event, asyncio.Task[None]]:
    """A running watcher of the chain at ``rpc_url``, once its subscription is accepted."""
    watcher = HeadWatcher(websocket_url(rpc_url))
    watcher.watch_logs(logs)
    stopping = asyncio.Event()
    runner = asyncio.create_task(watcher.run(stopping))
    deadline = time.monotonic() + 10
    while not watcher.connected:
        assert time.monotonic() < deadline, "the chain did not accept the subscription"
        await asyncio.sleep(0.02)
    return watcher, stopping, runner


def test_anvil_announces_each_new_block_to_the_head_watcher(devnet) -> None:
    """The node's new-block subscription works against the real chain: a tx wakes a waiter."""
    sender = Contracts.connect(devnet.deployment, devnet.new_key())

    async def scenario() -> None:
        watcher, stopping, runner = await subscribed_watcher(devnet.rpc_url)
        seen = watcher.seq
        await asyncio.to_thread(sender.client.send_value, Account.create().address, 1)
        await asyncio.wait_for(watcher.wait(seen, timeout=30), 10)
        assert watcher.seq > seen
        stopping.set()
        await runner

    asyncio.run(scenario())


def test_anvil_wakes_a_log_watcher_only_for_the_logs_it_asked_for(devnet) -> None:
    """Subscribed to Staked logs: a plain transfer and a registration wake nobody, a stake does,
    and the watcher's number is the stake's block."""
    from allmende.chain.events import EventDecoder, Staked

    node = devnet.contracts(devnet.new_key())
    decoder = EventDecoder(registry=devnet.deployment.registry, only=(Staked,))
    wanted = LogFilter(addresses=tuple(decoder.addresses), topics=tuple(decoder.topics or ()))

    async def scenario() -> None:
        watcher, stopping, runner = await subscribed_watcher(devnet.rpc_url, wanted)
        seen = watcher.seq
        await asyncio.to_thread(node.client.send_value, Account.create().address, 1)
        await asyncio.to_thread(node.registry.register, "http://127.0.0.1:7100", ROLE_TRAINER)
        await watcher.wait(seen, timeout=1.0)
        assert watcher.seq == seen  # neither block holds a Staked log
        receipt = await asyncio.to_thread(node.registry.stake, 5)
        await asyncio.wait_for(watcher.wait(seen, timeout=30), 10)
        assert watcher.seq > seen and watcher.number == receipt.block_number
        stopping.set()
        await runner

    asyncio.run(scenario())


def test_a_log_query_by_indexed_job_id_gets_only_that_jobs_logs(devnet) -> None:
    """``indexed`` goes to the real chain's eth_getLogs as topics 1..n: the round results of
    other jobs (``round_result`` reads through it) never arrive."""
    from allmende.chain.events import EventDecoder

    owner = devnet.contracts(devnet.new_key())
    start = owner.client.block_number() + 1
    member = owner.client.address
    made = [
        owner.jobs.create_job(
            spec_hash=h(f"spec-{i}"), model_hash=h("model-0"), rounds=1, reward_per_round=REWARD,
            min_trainers=1, max_trainers=1, quorum=1, round_deadline=DEADLINE,
            committee=[member], committee_size=1,
        )[0]
        for i in range(3)
    ]  # fmt: skip
    decoder = EventDecoder(jobs=devnet.deployment.jobs, only=(JobCreated,))
    query = dict(from_block=start, to_block=owner.client.block_number(),
                 addresses=decoder.addresses, topics=decoder.topics)  # fmt: skip
    assert len(owner.client.get_logs(**query)) == 3
    (raw,) = owner.client.get_logs(**query, indexed=(made[1],))
    assert decoder.decode(raw).job_id == made[1]
    assert owner.client.get_logs(**query, indexed=(max(made) + 1,)) == []
