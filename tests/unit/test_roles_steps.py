"""One step of the trainer and the aggregator against an in-memory Jobs contract.

The fake contract keeps only what the roles read and write (the real one is exercised by the
contract tests and tests/e2e); the store and state database are the real ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from allmende.chain import Commit, Job
from allmende.chain.events import ChainEvent, Proposed, RoundFinalized, UpdateCommitted
from allmende.chain.jobs import MAX_REOPENS, RoundResult
from allmende.errors import ContractRevert, PeerError
from allmende.learn.aggregate import aggregate
from allmende.net.client import FetchResult
from allmende.node.config import AggregatorSection, TrainerSection
from allmende.node.jobdata import update_metadata
from allmende.node.jobspec import parse_jobspec
from allmende.node.roles.aggregator import AggregatorRole
from allmende.node.roles.trainer import TrainerRole
from allmende.node.submit import initial_model_bytes
from allmende.store.blobs import BlobStore
from allmende.store.codec import decode_blob, decode_state, encode_state
from allmende.store.state import StateDB

ME = "0x00000000000000000000000000000000000000aa"
OWNER = "0x00000000000000000000000000000000000000ee"
T = ["0x0000000000000000000000000000000000000003", "0x0000000000000000000000000000000000000001",
     "0x0000000000000000000000000000000000000002"]  # fmt: skip
SPEC_FIELDS: dict[str, Any] = {
    "task": "digits-mlp", "rounds": 2, "min_trainers": 2, "max_trainers": 3, "quorum": 1,
    "reward_per_round": 100, "round_deadline": 60, "norm_bound": 5.0, "seed": 1,
    "optimizer": {"name": "sgd", "lr": 0.1}, "aggregation": {"rule": "fedavg"},
}  # fmt: skip
SPEC = parse_jobspec(SPEC_FIELDS)
EMPTY = bytes(32)


class FakeJobs:
    """The views and transactions of Jobs the roles use, for one job (id 1)."""

    def __init__(self, job: Job, trainers: list[str]) -> None:
        self.record = job
        self.trainer_list = list(trainers)
        self.aggregator_list: list[str] = []
        self.commits: dict[str, Commit] = {}
        self.proposals: list[tuple[str, int, int]] = []  # (hash, included, round)
        self.other_votes: Counter[tuple[str, int, int]] = Counter()  # other aggregators' votes
        self.finalized: list[tuple[int, str, int]] = []
        self.quorum_before_my_vote: tuple[str, int] | None = None  # others win the race
        self.joined: list[tuple[str, int]] = []
        self.commit_reads: list[tuple[int, str]] = []
        self.listeners: list[Any] = []  # roles' ``observe``: what the event stream would call
        self.sender = ME
        self.volunteer_list: list[str] = []
        self.calls: list[str] = []  # the new transactions: seal, reopen, evict, release
        self.evictable: set[int] = set()  # trainer indices the contract would evict
        self.evicted: set[str] = set()
        self.locks: dict[str, int] = {}  # Registry.lock_of(jobs, 1, node)
        self.results: dict[int, RoundResult] = {}

    def job(self, job_id: int) -> Job:
        return self.record

    def trainer_index(self, job_id: int, address: str) -> int | None:
        lowered = [t.lower() for t in self.trainer_list]
        return lowered.index(address.lower()) if address.lower() in lowered else None

    def trainer_at(self, job_id: int, i: int) -> str:
        return self.trainer_list[i]

    def aggregator_at(self, job_id: int, i: int) -> str:
        return self.aggregator_list[i]

    def is_aggregator(self, job_id: int, address: str) -> bool:
        return address in self.aggregator_list

    def is_trainer_active(self, job_id: int, address: str) -> bool:
        lowered = {t.lower() for t in self.trainer_list}
        return address.lower() in lowered and address.lower() not in self.evicted

    def is_volunteer(self, job_id: int, address: str) -> bool:
        return address in self.volunteer_list

    # the committee, liveness and locks, as the contract rules them

    def seal(self, job_id: int) -> None:
        self.calls.append("seal")
        if self.record.sealed or time.time() <= self.record.signup_end:
            raise ContractRevert("jobs: signup not over, or sealed", function="seal")
        self.aggregator_list = self.volunteer_list[: self.record.committee_size]  # "the draw"
        self.record = replace(
            self.record, sealed=True, round_start=int(time.time()),
            n_aggregators=len(self.aggregator_list),
        )  # fmt: skip

    def reopen(self, job_id: int) -> None:
        self.calls.append("reopen")
        if time.time() <= self.record.round_start + self.record.round_deadline:
            raise ContractRevert("jobs: the deadline has not passed", function="reopen")
        self.record = replace(
            self.record, round_start=int(time.time()), reopens=self.record.reopens + 1,
            attempt=self.record.attempt + 1,
        )  # fmt: skip

    def evict(self, job_id: int, index: int) -> None:
        self.calls.append(f"evict {index}")
        if index not in self.evictable:
            raise ContractRevert("jobs: the trainer has not missed enough rounds", function="evict")
        self.evicted.add(self.trainer_list[index].lower())
        self.record = replace(self.record, n_active_trainers=self.record.n_active_trainers - 1)

    def release(self, job_id: int) -> None:
        self.calls.append("release")
        self.locks[self.sender] = 0

    def challenge_window(self) -> int:
        return 100

    def commit_of(self, job_id: int, round_: int, trainer: str) -> Commit:
        self.commit_reads.append((round_, trainer))
        return self.commits.get(trainer, Commit(EMPTY, 0))

    def commit_update(self, job_id: int, round_: int, digest: str, weight: int) -> None:
        if round_ != self.record.current_round or self.sender in self.commits:
            raise ContractRevert("jobs: already committed", function="commit_update")
        self.commits[self.sender] = Commit(bytes.fromhex(digest), weight)

    def join(self, job_id: int, role: int) -> None:
        self.joined.append((self.sender, role))
        if role == 1:
            self.trainer_list.append(self.sender)
        elif not self.record.sealed:
            self.volunteer_list.append(self.sender)
        else:
            self.aggregator_list.append(self.sender)
        self.locks[self.sender] = self.record.aggregator_stake
        self.record = replace(
            self.record,
            n_trainers=len(self.trainer_list),
            n_active_trainers=len(self.trainer_list),
            n_aggregators=len(self.aggregator_list),
        )

    def vote_of(self, job_id: int, round_: int, aggregator: str) -> bytes:
        mine = [bytes.fromhex(h) for h, _, r in self.proposals if r == round_]
        return mine[0] if mine else EMPTY

    def voted_in_attempt(self, job_id: int, aggregator: str) -> bool:
        """As the contract: a vote of this node in the job's current attempt (one a round here,
        since these tests reopen no round)."""
        return FakeJobs.vote_of(self, job_id, self.record.current_round, aggregator) != EMPTY

    def propose(self, job_id: int, round_: int, digest: str, included: int) -> list[ChainEvent]:
        """This node's vote; as in the contract, the vote that brings the pair to the quorum
        finalizes the round. The "receipt" is the list of the transaction's events."""
        if self.quorum_before_my_vote is not None:
            self._finalize(round_, *self.quorum_before_my_vote)
            self.quorum_before_my_vote = None
        if round_ != self.record.current_round or self.record.status != 1:
            raise ContractRevert("jobs: wrong round", function="propose")
        if FakeJobs.vote_of(self, job_id, round_, self.sender) != EMPTY:  # not a node's read
            raise ContractRevert("jobs: already voted this round", function="propose")
        self.proposals.append((digest, included, round_))
        where = {"block_number": 12, "tx_hash": "0x", "address": "0x", "job_id": job_id}
        receipt: list[ChainEvent] = [Proposed(
            **where, log_index=0, round=round_, aggregator=self.sender,
            model_hash=bytes.fromhex(digest), included=included,
        )]  # fmt: skip
        if self.votes(job_id, round_, digest, included) == self.record.quorum:
            self._finalize(round_, digest, included)
            receipt.append(RoundFinalized(
                **where, log_index=1, round=round_, model_hash=bytes.fromhex(digest),
                included=included, total_weight=1,
            ))  # fmt: skip
        return receipt

    def round_result(self, job_id: int, round_: int) -> RoundResult:
        return self.results.get(round_, RoundResult(EMPTY, 0, 0))

    def _finalize(self, round_: int, digest: str, included: int) -> None:
        self.finalized.append((round_, digest, included))
        self.results[round_] = RoundResult(bytes.fromhex(digest), included, 1)
        last = round_ + 1 == self.record.rounds
        self.record = replace(
            self.record, current_round=round_ + 1, model_hash=bytes.fromhex(digest),
            attempt=self.record.attempt + 1,
            round_start=int(time.time()), status=2 if last else 1,
            final_model_hash=bytes.fromhex(digest) if last else EMPTY,
        )  # fmt: skip

    def events(self, receipt: list[ChainEvent]) -> list[ChainEvent]:
        return list(receipt)

    def votes(self, job_id: int, round_: int, digest: str, included: int) -> int:
        pair = (digest, included, round_)
        return self.proposals.count(pair) + self.other_votes[pair]


@dataclass
class FakeDirectory:
    async def endpoints(self, addresses: list[str], *, exclude: str = "") -> list[str]:
        return [f"http://{a}" for a in addresses if a.lower() != exclude.lower()]


class FakePeers:
    """Serves blobs from ``network`` (digest -> bytes); anything else is "not found"."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.network: dict[str, bytes] = {}
        self.asked: list[tuple[str, list[str]]] = []

    async def fetch_blob(self, digest: str, peers: Any, *, max_bytes: int | None = None):
        self.asked.append((digest, list(peers)))
        if not self.store.has(digest):
            if digest not in self.network:
                raise PeerError(f"No peer served blob {digest}.")
            self.store.put_bytes(self.network[digest])
        return FetchResult(digest, self.store.size(digest), None)


class FakeRegistry:
    def __init__(self) -> None:
        self.jobs: FakeJobs | None = None

    def lock_of(self, slasher: str, job_id: int, address: str) -> int:
        assert slasher == JOBS_ADDRESS and self.jobs is not None
        return self.jobs.locks.get(address, 0)


JOBS_ADDRESS = "0x00000000000000000000000000000000000000cc"


@pytest.fixture
def node(tmp_path: Path):
    store = BlobStore(tmp_path / "blobs")
    state = StateDB.open(tmp_path / "state.sqlite")
    peers = FakePeers(store)
    chain = SimpleNamespace(
        registry=FakeRegistry(),
        deployment=SimpleNamespace(jobs=SimpleNamespace(address=JOBS_ADDRESS)),
    )
    ctx = SimpleNamespace(
        address=ME, store=store, state=state, peers=peers, require_peers=lambda: peers,
        require_chain=lambda: chain, chain=chain,
    )  # fmt: skip
    yield ctx
    state.close()


def publish(peers: FakePeers, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    peers.network[digest] = data
    return digest


def make_job(peers: FakePeers, *, n_trainers: int, round_start: float, quorum: int = 1) -> Job:
    spec = parse_jobspec({**SPEC_FIELDS, "quorum": quorum})
    spec_hash = publish(peers, spec.canonical_bytes())
    model_hash = publish(peers, initial_model_bytes(SPEC))
    return Job(
        owner=OWNER, spec_hash=bytes.fromhex(spec_hash), model_hash=bytes.fromhex(model_hash),
        rounds=SPEC.rounds, reward_per_round=100, min_trainers=2, max_trainers=3, quorum=quorum,
        round_deadline=60, escrow=200, current_round=0, round_start=int(round_start), status=1,
        n_trainers=n_trainers, n_aggregators=0, final_model_hash=EMPTY,
        committee_size=spec.committee_size, signup_end=1, sealed=True, trainer_stake=0,
        aggregator_stake=spec.aggregator_stake, weight_cap=0, attempt=0, reopens=0,
        n_active_trainers=n_trainers, n_volunteers=0, ended_at=0,
    )  # fmt: skip


def trainer_role(ctx: Any, jobs: FakeJobs) -> TrainerRole:
    ctx.chain.registry.jobs = jobs
    role = TrainerRole(
        TrainerSection(allowed_tasks=["digits-mlp"], dataset={"num_parts": 3, "part": 0})
    )
    role.attach(ctx, jobs=jobs, directory=FakeDirectory())  # type: ignore[arg-type]
    return role


def aggregator_role(ctx: Any, jobs: FakeJobs, grace: float = 10.0) -> AggregatorRole:
    ctx.chain.registry.jobs = jobs
    role = AggregatorRole(AggregatorSection(fetch_grace_seconds=grace))
    role.attach(ctx, jobs=jobs, directory=FakeDirectory())  # type: ignore[arg-type]
    return role


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- trainer ---------------------------------------------------------------------------------


def test_trainer_joins_trains_commits_once_and_recomputes_the_same_bytes(node) -> None:
    jobs = FakeJobs(make_job(node.peers, n_trainers=0, round_start=9e9), [])
    role = trainer_role(node, jobs)
    assert run(role.step(1)) is False
    assert jobs.joined == [(ME, 1)]
    assert ME not in jobs.commits  # joining is one step, training the next
    run(role.step(1))
    commit = jobs.commits[ME]
    assert commit.weight == 1 and len(role.local_data(role.plans[1].task)) > 0  # equal weights
    update = decode_state(node.store.read_bytes(commit.update_hash.hex()))
    assert node.store.has(commit.update_hash.hex())
    run(role.step(1))  # committed already: nothing happens (a second commit would raise)
    assert len(jobs.commits) == 1
    # a restarted node that lost its commit (crash before the transaction) makes the same bytes
    jobs.commits.clear()
    run(trainer_role(node, jobs).step(1))
    assert jobs.commits[ME] == commit
    assert all(torch.equal(update[k], v) for k, v in decode_state(
        node.store.read_bytes(commit.update_hash.hex())).items())  # fmt: skip


def test_trainer_serves_its_update_only_once_its_commit_is_mined(node) -> None:
    """Front-running a copy: while the commit is pending (its hash public in a mempool) nobody
    can fetch the blob, so a copier learns the tensors only after the commit is in a block."""
    jobs = FakeJobs(make_job(node.peers, n_trainers=1, round_start=9e9), [ME])
    stored_when_committed: list[bool] = []
    real_commit = jobs.commit_update

    def watched_commit(job_id: int, round_: int, digest: str, weight: int) -> None:
        stored_when_committed.append(node.store.has(digest))
        real_commit(job_id, round_, digest, weight)

    jobs.commit_update = watched_commit  # type: ignore[method-assign]
    run(trainer_role(node, jobs).step(1))
    digest = jobs.commits[ME].update_hash.hex()
    assert stored_when_committed == [False]
    blob = decode_blob(node.store.read_bytes(digest))  # served from now on
    assert blob.metadata == {"allmende.job": "1", "allmende.round": "0", "allmende.trainer": ME}


def test_trainer_that_crashed_between_commit_and_store_serves_the_same_bytes(node) -> None:
    jobs = FakeJobs(make_job(node.peers, n_trainers=1, round_start=9e9), [ME])
    run(trainer_role(node, jobs).step(1))
    digest = jobs.commits[ME].update_hash.hex()
    original = node.store.read_bytes(digest)
    node.store.delete(digest)  # the crash came before the blob was stored
    run(trainer_role(node, jobs).step(1))  # the restarted node: committed, nothing to serve
    assert node.store.read_bytes(digest) == original
    assert len(jobs.commits) == 1  # and it did not commit again


def test_trainer_asks_the_chain_for_its_commit_only_when_it_cannot_know(node) -> None:
    jobs = FakeJobs(make_job(node.peers, n_trainers=1, round_start=9e9), [ME])
    role = trainer_role(node, jobs)
    run(role.step(1))  # a fresh process: the chain says whether it committed in round 0
    assert jobs.commit_reads == [(0, ME)] and ME in jobs.commits

    def next_round(round_: int) -> None:  # the same model again: only the round matters here
        jobs.record = replace(jobs.record, current_round=round_)
        jobs.commits.clear()
        jobs.commit_reads.clear()

    next_round(1)
    run(role.step(1))  # it committed in round 0, so not yet in round 1
    assert jobs.commit_reads == [] and ME in jobs.commits

    next_round(2)
    jobs.commits[ME] = Commit(b"\x01" * 32, 5)  # its transaction went through, the receipt lost
    with pytest.raises(ContractRevert):
        run(role.step(1))
    run(role.step(1))  # unsure after a failed commit: the chain says it committed
    assert jobs.commit_reads == [(2, ME)] and jobs.commits[ME].weight == 5


def test_trainer_does_not_train_after_the_deadline(node) -> None:
    jobs = FakeJobs(make_job(node.peers, n_trainers=1, round_start=0), [ME])
    run(trainer_role(node, jobs).step(1))
    assert jobs.commits == {}


def test_trainer_refuses_a_full_job(node, caplog) -> None:
    jobs = FakeJobs(make_job(node.peers, n_trainers=3, round_start=9e9), T)
    assert run(trainer_role(node, jobs).step(1)) is True
    assert jobs.joined == []
    assert "already has its 3 trainers" in caplog.text


def test_trainer_waits_while_the_spec_is_unavailable(node) -> None:
    jobs = FakeJobs(make_job(node.peers, n_trainers=0, round_start=9e9), [])
    node.peers.network.clear()
    assert run(trainer_role(node, jobs).step(1)) is False  # asks again later
    assert jobs.joined == []


# -- aggregator ------------------------------------------------------------------------------


def commit_updates(
    node: Any,
    jobs: FakeJobs,
    states: dict[str, dict[str, torch.Tensor] | bytes],
    *,
    announce: bool = True,
    block: int = 10,
) -> None:
    """The trainers commit ``states`` (tensors, encoded as each trainer's own update, or the
    blob's bytes as they are) in ``block``, in the order given; with ``announce``, the roles
    see the events too (without it, the commits happened in blocks the roles' event stream has
    not read yet)."""
    for index, (trainer, state) in enumerate(states.items()):
        round_ = jobs.record.current_round
        blob = state if isinstance(state, bytes) else own_update(trainer, round_, state)
        digest = publish(node.peers, blob)
        commit = jobs.commits[trainer] = Commit(bytes.fromhex(digest), 10 + T.index(trainer))
        event = UpdateCommitted(
            block_number=block, log_index=index, tx_hash="0x", address="0x", job_id=1,
            round=jobs.record.current_round, trainer=trainer, update_hash=commit.update_hash,
            weight=commit.weight,
        )  # fmt: skip
        for observe in jobs.listeners if announce else ():
            observe(event)


def own_update(trainer: str, round_: int, state: dict[str, torch.Tensor], job_id: int = 1) -> bytes:
    """``state`` as ``trainer``'s own update blob for the round (as a trainer node writes it)."""
    return encode_state(state, metadata=update_metadata(job_id, round_, trainer))


def trained_like(seed: int) -> dict[str, torch.Tensor]:
    initial = decode_state(initial_model_bytes(SPEC))
    generator = torch.Generator().manual_seed(seed)
    return {k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in initial.items()}


def joined_aggregator(node: Any, job: Job, grace: float = 10.0) -> tuple[FakeJobs, AggregatorRole]:
    jobs = FakeJobs(job, T)
    jobs.aggregator_list.append(ME)
    jobs.record = replace(jobs.record, n_aggregators=1)
    role = aggregator_role(node, jobs, grace)
    jobs.listeners.append(role.observe)
    return jobs, role


def finalize_lines(caplog: Any) -> list[str]:
    """The aggregator's "proposed" and "finalized" lines, in order (the benchmarks parse them)."""
    return [
        r.getMessage() for r in caplog.records
        if r.name == "allmende.node.roles.aggregator"
        and (": proposed model" in r.getMessage() or ": finalized model" in r.getMessage())
    ]  # fmt: skip


def test_aggregator_waits_for_every_commit_then_proposes_and_finalizes(node, caplog) -> None:
    caplog.set_level(logging.INFO, logger="allmende.node.roles.aggregator")
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    states = {t: trained_like(i) for i, t in enumerate(T)}
    commit_updates(node, jobs, {T[0]: states[T[0]], T[1]: states[T[1]]})
    run(role.step(1))
    assert jobs.proposals == []  # one trainer has not committed and the deadline is far
    commit_updates(node, jobs, {T[2]: states[T[2]]})
    run(role.step(1))
    digest, included, round_ = jobs.proposals[0]
    assert (included, round_) == (0b111, 0)
    initial = decode_state(initial_model_bytes(SPEC))
    expected = aggregate("fedavg", initial, [(t, states[t], 10 + T.index(t)) for t in T], {})
    assert decode_state(node.store.read_bytes(digest)).keys() == expected.keys()
    assert encode_state(expected) == node.store.read_bytes(digest)
    assert jobs.finalized == [(0, digest, 0b111)]  # quorum 1: its own vote completes it
    assert jobs.record.current_round == 1  # in the same transaction; nothing else was sent
    (proposed, finalized) = finalize_lines(caplog)
    assert proposed.startswith("Job 1 round 0: proposed model ")
    assert finalized == f"Job 1 round 0: finalized model {digest[:16]}."
    run(role.step(1))
    assert len(jobs.proposals) == 1  # round 1 waits for its commits
    # updates are asked for from their author first
    asked = dict(node.peers.asked)
    assert asked[jobs.commits[T[1]].update_hash.hex()][0] == f"http://{T[1]}"


def test_aggregator_reads_no_commit_while_it_waits_for_the_announcements(node) -> None:
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    states = {t: trained_like(i) for i, t in enumerate(T)}
    commit_updates(node, jobs, {T[0]: states[T[0]], T[1]: states[T[1]]})
    commit_updates(node, jobs, {T[2]: states[T[2]]}, announce=False)  # in an unread block
    run(role.step(1))
    assert jobs.commit_reads == []  # the deadline is far: wait for the events
    assert jobs.proposals == []
    role.observe(
        UpdateCommitted(
            block_number=11, log_index=0, tx_hash="0x", address="0x", job_id=1, round=0,
            trainer=T[2], update_hash=jobs.commits[T[2]].update_hash,
            weight=jobs.commits[T[2]].weight,
        )
    )  # fmt: skip
    run(role.step(1))
    assert jobs.commit_reads == []
    assert jobs.proposals and jobs.proposals[0][1] == 0b111


def test_aggregator_reads_unannounced_commits_before_going_ahead_without_them(
    node, monkeypatch
) -> None:
    """After the deadline the aggregator may go ahead with fewer trainers, but only with the
    chain's word that the others did not commit: events it has not read yet may hold them."""
    now = 1_000_000.0
    job = make_job(node.peers, n_trainers=3, round_start=now)
    jobs, role = joined_aggregator(node, job)
    states = {t: trained_like(i) for i, t in enumerate(T)}
    commit_updates(node, jobs, {T[0]: states[T[0]], T[1]: states[T[1]]})
    commit_updates(node, jobs, {T[2]: states[T[2]]}, announce=False)
    clock = SimpleNamespace(time=lambda: now + job.round_deadline + 1)
    monkeypatch.setattr("allmende.node.roles.base.time", clock)
    run(role.step(1))
    assert jobs.commit_reads == [(0, T[2])]  # only the one not announced
    assert jobs.proposals[0][1] == 0b111  # and it is included, as every aggregator would


def test_aggregator_decides_on_missing_commits_only_once_it_could_go_ahead(
    node, monkeypatch
) -> None:
    now = 1_000_000.0
    job = make_job(node.peers, n_trainers=3, round_start=now, quorum=2)
    jobs, role = joined_aggregator(node, job, grace=30.0)
    commit_updates(node, jobs, {T[0]: trained_like(0)})
    commit_updates(node, jobs, {T[1]: trained_like(1)}, announce=False)
    clock = SimpleNamespace(time=lambda: now + job.round_deadline + 1)
    monkeypatch.setattr("allmende.node.roles.base.time", clock)
    run(role.step(1))
    # One announced commit is fewer than min_trainers: nothing to decide, so nothing is read;
    # the stream brings the other commit's event in time.
    assert (jobs.commit_reads, jobs.proposals) == ([], [])
    commit_updates(node, jobs, {T[1]: trained_like(1)})
    run(role.step(1))
    assert jobs.commit_reads == [(0, T[2])]  # T[2] never committed: the chain says so
    assert jobs.proposals[0][1] == 0b011
    jobs.commit_reads.clear()
    run(role.step(1))
    assert jobs.commit_reads == []  # voted, the round not final yet: nothing more to read
    assert len(jobs.proposals) == 1 and jobs.finalized == []


def test_aggregator_downloads_each_announced_update_before_the_round_is_complete(node) -> None:
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))

    async def scenario() -> None:
        await role.step(1)  # reads the job: nobody committed yet
        commit_updates(node, jobs, {T[1]: trained_like(1)})  # the stream calls observe here
        await asyncio.gather(*role._prefetching)

    run(scenario())
    digest = jobs.commits[T[1]].update_hash.hex()
    assert node.store.has(digest)  # downloaded while two trainers have still to commit
    asked, peers = node.peers.asked[-1]
    assert (asked, peers[0]) == (digest, f"http://{T[1]}")  # from its author first
    assert jobs.proposals == []


def test_aggregator_uses_the_updates_it_checked_when_they_were_announced(node) -> None:
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    states = {t: trained_like(i) for i, t in enumerate(T)}

    async def scenario() -> None:
        await role.step(1)
        commit_updates(node, jobs, {T[0]: states[T[0]], T[1]: states[T[1]]})
        await asyncio.gather(*role._prefetching)
        early = jobs.commits[T[1]].update_hash.hex()
        node.store.path(early).unlink()  # gone from the store and from every peer:
        del node.peers.network[early]  # only the tensors decoded on arrival are left
        commit_updates(node, jobs, {T[2]: states[T[2]]})
        await asyncio.gather(*role._prefetching)
        await role.step(1)

    run(scenario())
    digest, included, _ = jobs.proposals[0]
    assert included == 0b111  # trainer 1's update counted without being read again
    initial = decode_state(initial_model_bytes(SPEC))
    expected = aggregate("fedavg", initial, [(t, states[t], 10 + T.index(t)) for t in T], {})
    assert node.store.read_bytes(digest) == encode_state(expected)


def test_aggregator_starts_a_round_from_the_model_it_stored_and_checks_its_vote_once(
    node,
) -> None:
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    vote_reads: list[int] = []
    real_voted = jobs.voted_in_attempt

    def counted_voted(job_id: int, aggregator: str) -> bool:
        vote_reads.append(jobs.record.current_round)
        return real_voted(job_id, aggregator)

    jobs.voted_in_attempt = counted_voted  # type: ignore[method-assign]
    for round_ in (0, 1):
        states = {t: trained_like(10 * round_ + i) for i, t in enumerate(T)}
        commit_updates(node, jobs, states)
        run(role.step(1))
        assert jobs.finalized[-1][0] == round_
    round_1_model = jobs.finalized[0][1]  # the global model of round 1, stored by this node
    assert round_1_model not in [digest for digest, _ in node.peers.asked]  # not read back
    assert vote_reads == [0]  # only the first vote of this process could predate it
    # and the round-1 result is still FedAvg over the round-1 global model
    global_1 = decode_state(node.store.read_bytes(round_1_model))
    expected = aggregate("fedavg", global_1, [(t, states[t], 10 + T.index(t)) for t in T], {})
    assert node.store.read_bytes(jobs.finalized[1][1]) == encode_state(expected)


def test_aggregator_checks_each_update_once_where_its_bytes_enter(node, monkeypatch) -> None:
    import allmende.learn.aggregate as aggregate_module
    import allmende.store.codec as codec_module

    checked: list[int] = []
    decoded: list[int] = []
    real_check, real_decode = aggregate_module.check_update, codec_module.decode_blob

    def counted_check(update, reference):  # type: ignore[no-untyped-def]
        checked.append(len(update))
        return real_check(update, reference)

    def counted_decode(data, *args, **kwargs):  # type: ignore[no-untyped-def]
        decoded.append(len(data))
        return real_decode(data, *args, **kwargs)

    updates = [{t: trained_like(10 * round_ + i) for i, t in enumerate(T)} for round_ in (0, 1)]
    monkeypatch.setattr(aggregate_module, "check_update", counted_check)
    monkeypatch.setattr(codec_module, "decode_blob", counted_decode)
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    for round_ in (0, 1):
        commit_updates(node, jobs, updates[round_])
        run(role.step(1))
        assert jobs.finalized[-1][0] == round_
    # Round 0: the initial model and three updates, each decoded and checked once; round 1:
    # three updates (its global model is the one this node stored, neither decoded nor checked).
    assert len(checked) == len(decoded) == 1 + 3 + 3


def test_aggregator_leaves_out_bad_updates_deterministically(node) -> None:
    huge = {k: v * 1000 for k, v in trained_like(1).items()}  # over the norm bound
    wrong_shape = {"0.weight": torch.zeros(3, 3)}
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    commit_updates(node, jobs, {T[0]: trained_like(0), T[1]: huge, T[2]: wrong_shape})
    run(role.step(1))
    assert jobs.proposals == []  # one good update is fewer than min_trainers (2)
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    commit_updates(node, jobs, {T[0]: trained_like(0), T[1]: huge, T[2]: trained_like(2)})
    run(role.step(1))
    _, included, _ = jobs.proposals[0]
    assert included == 0b101  # trainers 0 and 2; trainer 1's update moved the model too far


def left_out(caplog: Any, trainer: str) -> list[str]:
    """The aggregator's lines leaving ``trainer``'s update out."""
    return [
        r.getMessage() for r in caplog.records
        if r.name == "allmende.node.roles.aggregator"
        and f"leaving out {trainer}'s" in r.getMessage()
    ]  # fmt: skip


def test_aggregator_leaves_out_a_trainer_that_committed_anothers_update_hash(node, caplog) -> None:
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    original = own_update(T[0], 0, trained_like(0))
    commit_updates(node, jobs, {T[0]: original, T[1]: trained_like(1), T[2]: original})
    run(role.step(1))
    _, included, _ = jobs.proposals[0]
    assert included == 0b011  # T[2] committed T[0]'s bytes: left out, so not paid
    (line,) = left_out(caplog, T[2])
    assert "(a copy): its blob names job 1, round 0, trainer " + T[0] in line, line
    run(role.step(1))
    assert len(left_out(caplog, T[2])) == 1  # logged once


def test_aggregator_leaves_out_an_update_from_another_round(node, caplog) -> None:
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    replayed = own_update(T[2], 5, trained_like(2))  # its own, but made for round 5
    commit_updates(node, jobs, {T[0]: trained_like(0), T[1]: trained_like(1), T[2]: replayed})
    run(role.step(1))
    assert jobs.proposals[0][1] == 0b011
    assert "round 5" in left_out(caplog, T[2])[0]


def test_aggregator_leaves_out_the_same_tensors_rewrapped_by_a_later_commit(node, caplog) -> None:
    tensors = trained_like(0)
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    commit_updates(node, jobs, {T[0]: tensors, T[2]: trained_like(2)}, block=10)
    commit_updates(node, jobs, {T[1]: tensors}, block=11)  # re-wrapped under its own name
    run(role.step(1))
    assert jobs.proposals[0][1] == 0b101
    (line,) = left_out(caplog, T[1])
    assert f"those of {T[0]}'s update, committed before it (block 10, log 0)" in line, line


def test_aggregator_keeps_the_first_commit_of_the_same_tensors_not_the_lowest_address(
    node,
) -> None:
    tensors = trained_like(0)
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    commit_updates(node, jobs, {T[1]: tensors}, block=10)  # T[1] (address ...01) first
    commit_updates(node, jobs, {T[2]: trained_like(2), T[0]: tensors}, block=10)  # logs 0 and 1
    run(role.step(1))
    assert jobs.proposals[0][1] == 0b110  # T[0] committed the same tensors later in the block


def test_aggregator_leaves_out_the_global_model_unchanged(node, caplog) -> None:
    initial = decode_state(initial_model_bytes(SPEC))
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    commit_updates(node, jobs, {T[0]: trained_like(0), T[1]: trained_like(1), T[2]: initial})
    run(role.step(1))
    assert jobs.proposals[0][1] == 0b011
    assert "global model unchanged (a zero update)" in left_out(caplog, T[2])[0]
    # the model's own blob (no author at all) is left out as well
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    bare = initial_model_bytes(SPEC)
    commit_updates(node, jobs, {T[0]: trained_like(0), T[1]: trained_like(1), T[2]: bare})
    run(role.step(1))
    assert jobs.proposals[0][1] == 0b011


def test_aggregators_seeing_copies_in_any_order_propose_the_same(node, tmp_path) -> None:
    tensors = trained_like(0)
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    events: list[ChainEvent] = []
    jobs.listeners.append(events.append)
    commit_updates(node, jobs, {T[1]: tensors, T[2]: trained_like(2), T[0]: tensors}, block=10)
    run(role.step(1))
    assert jobs.proposals[0][1] == 0b110  # of the same tensors only the first commit's
    proposal = jobs.proposals[0][:2]
    for order in (events[::-1], [events[1], events[2], events[0]]):
        other = SimpleNamespace(**{**vars(node), "store": BlobStore(tmp_path / f"o{id(order)}")})
        other.peers = FakePeers(other.store)
        other.peers.network = node.peers.network
        other.require_peers = lambda other=other: other.peers
        other_jobs = FakeJobs(make_job(other.peers, n_trainers=3, round_start=9e9), T)
        other_jobs.commits = dict(jobs.commits)
        other_jobs.aggregator_list.append(ME)
        other_jobs.record = replace(other_jobs.record, n_aggregators=1)
        other_role = aggregator_role(other, other_jobs)
        for event in order:
            other_role.observe(event)
        run(other_role.step(1))
        assert other_jobs.proposals[0][:2] == proposal


def test_aggregator_waits_for_the_chain_order_of_the_same_tensors(node, monkeypatch) -> None:
    now = 1_000_000.0
    job = make_job(node.peers, n_trainers=3, round_start=now)
    jobs, role = joined_aggregator(node, job)
    tensors = trained_like(0)
    commit_updates(node, jobs, {T[0]: tensors, T[2]: trained_like(2)})
    commit_updates(node, jobs, {T[1]: tensors}, announce=False, block=12)  # its log: unread
    clock = SimpleNamespace(time=lambda: now + job.round_deadline + 1)
    monkeypatch.setattr("allmende.node.roles.base.time", clock)
    run(role.step(1))
    assert jobs.commit_reads == [(0, T[1])] and jobs.proposals == []  # order unknown: wait
    role.observe(
        UpdateCommitted(
            block_number=12, log_index=0, tx_hash="0x", address="0x", job_id=1, round=0,
            trainer=T[1], update_hash=jobs.commits[T[1]].update_hash,
            weight=jobs.commits[T[1]].weight,
        )
    )  # fmt: skip
    run(role.step(1))
    assert jobs.proposals[0][1] == 0b101


def test_aggregator_waits_for_an_unserved_update_until_its_grace_ends(node, monkeypatch) -> None:
    now = 1_000_000.0
    job = make_job(node.peers, n_trainers=3, round_start=now)
    jobs, role = joined_aggregator(node, job, grace=30.0)
    commit_updates(node, jobs, {t: trained_like(i) for i, t in enumerate(T)})
    del node.peers.network[jobs.commits[T[1]].update_hash.hex()]  # nobody serves it
    clock = SimpleNamespace(time=lambda: now + 1)
    monkeypatch.setattr("allmende.node.roles.base.time", clock)
    run(role.step(1))
    assert jobs.proposals == []  # before the deadline: wait for it
    clock.time = lambda: now + job.round_deadline + 29
    run(role.step(1))
    assert jobs.proposals == []  # still within the grace period
    clock.time = lambda: now + job.round_deadline + 31
    run(role.step(1))
    assert jobs.proposals[0][1] == 0b101


def test_aggregator_whose_vote_completes_the_quorum_finalizes_the_round(node, caplog) -> None:
    caplog.set_level(logging.INFO, logger="allmende.node.roles.aggregator")
    job = make_job(node.peers, n_trainers=3, round_start=9e9, quorum=2)
    jobs, role = joined_aggregator(node, job)
    commit_updates(node, jobs, {t: trained_like(i) for i, t in enumerate(T)})
    run(role.step(1))  # the first vote of two
    digest, included, _ = jobs.proposals[0]
    assert (jobs.finalized, jobs.record.current_round) == ([], 0)
    (proposed,) = finalize_lines(caplog)  # proposed, not finalized
    assert proposed.startswith("Job 1 round 0: proposed model ")
    jobs._finalize(0, digest, included)  # another aggregator's vote completed the quorum
    run(role.step(1))  # round 1 waits for its commits; this node sends nothing for round 0
    assert len(jobs.proposals) == 1
    assert not any("finalized" in line for line in finalize_lines(caplog))

    # the same round, but the other vote came first: this node's vote completes the quorum
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9,
                                                  quorum=2))  # fmt: skip
    commit_updates(node, jobs, {t: trained_like(i) for i, t in enumerate(T)})
    jobs.other_votes[(digest, included, 0)] += 1
    caplog.clear()
    run(role.step(1))
    assert jobs.finalized == [(0, digest, included)]
    assert finalize_lines(caplog)[-1] == f"Job 1 round 0: finalized model {digest[:16]}."


def test_a_restarted_aggregator_that_voted_sends_nothing(node, caplog, tmp_path) -> None:
    caplog.set_level(logging.INFO, logger="allmende.node.roles.aggregator")
    job = make_job(node.peers, n_trainers=3, round_start=9e9, quorum=2)
    jobs, role = joined_aggregator(node, job)
    commit_updates(node, jobs, {t: trained_like(i) for i, t in enumerate(T)})
    run(role.step(1))
    assert len(jobs.proposals) == 1
    asked = len(node.peers.asked)
    restarted = aggregator_role(node, jobs)  # same state database: the saved proposal
    run(restarted.step(1))
    assert len(jobs.proposals) == 1 and jobs.finalized == []
    assert len(node.peers.asked) == asked  # it did not fetch or aggregate again
    # a node that crashed between its vote and saving it: the chain has the vote; no second one
    lost = SimpleNamespace(**{**vars(node), "state": StateDB.open(tmp_path / "lost.sqlite")})
    run(aggregator_role(lost, jobs).step(1))
    lost.state.close()
    assert len(jobs.proposals) == 1 and jobs.finalized == []
    assert len([line for line in finalize_lines(caplog) if "proposed" in line]) == 1


def test_aggregator_whose_vote_comes_after_the_quorum_moves_on(node, caplog) -> None:
    caplog.set_level(logging.INFO, logger="allmende.node.roles.aggregator")
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    commit_updates(node, jobs, {t: trained_like(i) for i, t in enumerate(T)})
    jobs.quorum_before_my_vote = ("ab" * 32, 0b111)  # others finalize between read and vote
    assert run(role.step(1)) is False
    assert jobs.proposals == [] and jobs.finalized == [(0, "ab" * 32, 0b111)]
    assert "Job 1 round 0: finalized before this node's vote." in caplog.text
    assert finalize_lines(caplog) == []
    assert role.saved_proposal(1, 0, 0) is None


def test_aggregator_refuses_a_job_whose_owner_its_policy_rejects(node, caplog) -> None:
    signing_up = {"sealed": False, "signup_end": int(time.time()) + 3600}
    jobs = FakeJobs(replace(make_job(node.peers, n_trainers=3, round_start=9e9), **signing_up), T)
    role = AggregatorRole(AggregatorSection(allowed_owners=[T[0]]))
    role.attach(node, jobs=jobs, directory=FakeDirectory())  # type: ignore[arg-type]
    assert run(role.step(1)) is True
    assert jobs.joined == []
    assert f"Not joining job 1 as aggregator: the job owner {OWNER}" in caplog.text


# -- committee, liveness, locks ----------------------------------------------------------------


def test_aggregator_volunteers_during_the_signup_then_seals_and_works(node, caplog) -> None:
    caplog.set_level(logging.INFO)
    job = replace(make_job(node.peers, n_trainers=3, round_start=0), sealed=False,
                  signup_end=int(time.time()) + 3600)  # fmt: skip
    jobs = FakeJobs(job, T)
    role = aggregator_role(node, jobs)
    jobs.listeners.append(role.observe)
    assert run(role.step(1)) is False
    assert jobs.volunteer_list == [ME] and jobs.aggregator_list == []  # volunteered, not drawn
    assert run(role.step(1)) is False and jobs.calls == []  # no seal before the signup ends
    jobs.record = replace(jobs.record, signup_end=int(time.time()) - 1)
    run(role.step(1))
    assert jobs.calls == ["seal"] and jobs.record.sealed and jobs.aggregator_list == [ME]
    commit_updates(node, jobs, {t: trained_like(i) for i, t in enumerate(T)})
    run(role.step(1))
    assert jobs.finalized and jobs.finalized[0][0] == 0  # a drawn member votes; quorum 1


def test_a_volunteer_not_drawn_is_done_with_the_job(node, caplog) -> None:
    caplog.set_level(logging.INFO)
    job = replace(make_job(node.peers, n_trainers=3, round_start=0), sealed=True, signup_end=1)
    jobs = FakeJobs(job, T)
    jobs.volunteer_list = [ME]  # it signed up; the draw chose others
    role = aggregator_role(node, jobs)
    assert run(role.step(1)) is True
    assert "not drawn into the committee" in caplog.text and jobs.joined == []
    jobs.volunteer_list = []  # and one that never signed up cannot join a sealed committee
    other = aggregator_role(node, jobs)
    assert run(other.step(1)) is True and jobs.joined == []
    assert "was drawn without this node" in caplog.text


def test_a_stalled_round_is_reopened_after_its_deadline_and_grace_at_most_max_times(
    node, caplog
) -> None:
    now = time.time()
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=now))
    commit_updates(node, jobs, {T[0]: trained_like(0)})  # one commit, min_trainers is 2
    run(role.step(1))
    assert jobs.calls == []  # the deadline has not passed
    jobs.record = replace(jobs.record, round_start=int(now) - 61 - 10 - 1)  # deadline + grace
    run(role.step(1))
    assert jobs.calls == ["reopen"] and jobs.record.reopens == 1
    assert jobs.record.round_start >= int(now)  # a fresh deadline: the trainers commit again
    jobs.record = replace(jobs.record, round_start=int(now) - 100, reopens=MAX_REOPENS)
    run(role.step(1))
    assert jobs.calls == ["reopen"]  # no more: only the owner's cancel can end it now
    assert "only the owner's cancel can end the job now" in caplog.text


def test_a_waiting_round_asks_to_evict_trainers_absent_from_the_last_rounds(node) -> None:
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    for round_ in range(3):  # T[2] (index 2) is never included
        jobs.results[round_] = RoundResult(model_hash=b"\1" * 32, included=0b011, total_weight=2)
    jobs.record = replace(jobs.record, current_round=3)
    jobs.evictable = {2}
    commit_updates(node, jobs, {T[0]: trained_like(0), T[1]: trained_like(1)})
    run(role.step(1))
    assert jobs.calls == ["evict 2"] and jobs.record.n_active_trainers == 2
    run(role.step(1))  # the round now has every active trainer's commit
    assert jobs.calls == ["evict 2"] and jobs.finalized[-1][0] == 3


def test_stake_is_released_once_the_challenge_window_passed(node, caplog) -> None:
    caplog.set_level(logging.INFO)
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    jobs.locks[ME] = 5
    jobs.record = replace(jobs.record, status=2, ended_at=int(time.time()))
    assert run(role.step(1)) is False and jobs.calls == []  # still in the challenge window
    jobs.record = replace(jobs.record, ended_at=int(time.time()) - 101)
    assert run(role.step(1)) is True and jobs.calls == ["release"]
    assert "released the 5 wei" in caplog.text
    assert run(role.step(1)) is True and jobs.calls == ["release"]  # nothing locked any more


def test_a_trainer_waits_for_the_committee_and_stops_once_evicted(node, caplog) -> None:
    job = replace(make_job(node.peers, n_trainers=0, round_start=0), sealed=False,
                  signup_end=int(time.time()) + 3600)  # fmt: skip
    jobs = FakeJobs(job, [])
    role = trainer_role(node, jobs)
    run(role.step(1))  # joins during the signup
    assert jobs.trainer_list == [ME]
    run(role.step(1))
    assert ME not in jobs.commits  # round 0 has not started
    jobs.record = replace(jobs.record, sealed=True, round_start=int(time.time()))
    jobs.evicted.add(ME.lower())
    assert run(role.step(1)) is True and ME not in jobs.commits
    assert "was evicted" in caplog.text


def test_deadlines_follow_a_chain_whose_clock_runs_ahead(monkeypatch) -> None:
    role = AggregatorRole(AggregatorSection())
    wall = [1_000.0]
    monkeypatch.setattr("allmende.node.roles.base.time.time", lambda: wall[0])
    assert role.now() == 1_000.0
    role.follow_chain_clock(1_024)  # a chain giving each block a second more than the last
    assert role.now() == 1_024.0
    wall[0] = 1_010.0  # no new block for 10 s: chain time goes on with the machine's clock
    role.follow_chain_clock(1_024)
    assert role.now() == 1_034.0
    role.follow_chain_clock(900)  # an idle dev chain's newest block is just old
    assert role.now() == 1_010.0
