"""Byzantine participants that live in the test process, acting through ``allmende.chain``.

Each adversary is a funded, staked, registered account. A :class:`BadTrainer` commits an update
crafted from the round's global model by its ``attack`` (NaN, wrong shape, exploding norm, the
model unchanged; or raw bytes: a header nested past the JSON parser's recursion limit, a blob
larger than any model, the global model's own blob) under its own name, and serves it from a
:class:`BlobServer` (a tiny HTTP server speaking the node API's blob route), so aggregators can
fetch it like any update. A :class:`Copier` waits for an honest trainer's commit and commits
the same hash, or the same tensors re-wrapped under its own name. A :class:`WrongAggregator`
votes for a model hash that no honest aggregator computes, as soon as the contract lets it.
:class:`Adversaries` steps them all in a background thread until stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import torch

from allmende.chain import ROLE_AGGREGATOR, ROLE_TRAINER, Contracts, Job, JobStatus
from allmende.chain.jobs import included_words, vote_commitment
from allmende.errors import AllmendeError, BlobNameError, BlobNotFound, HashMismatch
from allmende.node.jobdata import update_metadata
from allmende.store.blobs import BlobStore
from allmende.store.codec import decode_blob, decode_state, encode_state, encoded_size

log = logging.getLogger(__name__)
State = dict[str, torch.Tensor]
Attack = Callable[[State], State | bytes]  # tensors to encode, or the blob's bytes as they are
POLL_SECONDS = 0.2
MINED_TOGETHER_GAS = 1_000_000
EMPTY = bytes(32)


def with_nan(state: State) -> State:
    """The global model with one NaN and one +Inf."""
    bad = {key: value.clone() for key, value in state.items()}
    first = sorted(bad)[0]
    bad[first].view(-1)[0] = float("nan")
    bad[first].view(-1)[1] = float("inf")
    return bad


def wrong_shape(state: State) -> State:
    """The global model with one weight matrix missing its last row."""
    bad = {key: value.clone() for key, value in state.items()}
    name = next(key for key in sorted(bad) if bad[key].dim() == 2)
    bad[name] = bad[name][:-1].clone()
    return bad


def exploding_norm(state: State) -> State:
    """The global model moved by 1000 in every coordinate (a norm far over any sane bound)."""
    return {key: value + 1000.0 for key, value in state.items()}


def unchanged(state: State) -> State:
    """The global model as it is: a zero update, committed under the attacker's own name."""
    return state


def global_model_blob(state: State) -> bytes:
    """The global model's own blob: its commit names the round's model hash itself."""
    return encode_state(state)


def nudged(state: State) -> State:
    """The global model moved a little: an update an honest trainer could have sent."""
    return {key: value + 0.001 for key, value in state.items()}


def nested_header(state: State) -> bytes:
    """A blob exactly as long as a model of the task, all of it one header of ``[[[[...``:
    nested far past Python's recursion limit, yet no byte over the fetch limit."""
    size = encoded_size(state)
    return struct.pack("<Q", size - 8) + b"[" * (size - 8)


def oversized(state: State) -> bytes:
    """The global model's blob with a megabyte of padding after its tensors."""
    return encode_state(state) + b"\0" * (1024 * 1024)


class BlobServer:
    """Serves ``GET|HEAD /v1/blobs/<sha256>`` from a blob store on 127.0.0.1 (a thread).

    ``serve_when(digest)`` says whether a stored blob is served yet (404 until then), so a test
    can order what peers see without waiting on time."""

    def __init__(self, root: Path) -> None:
        self.store = BlobStore(root)
        self.serve_when: Callable[[str], bool] = lambda digest: True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                digest = self.path.rsplit("/", 1)[-1]
                try:
                    data = server.store.read_bytes(digest)
                    if not server.serve_when(digest):
                        raise BlobNotFound(digest)
                except (BlobNotFound, BlobNameError, HashMismatch):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(data)

            do_HEAD = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> BlobServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def enlist(contracts: Contracts, endpoint: str, role: int, stake: int) -> None:
    """Register ``contracts``' account with ``endpoint`` and ``role``, and stake ``stake``."""
    contracts.registry.register(endpoint, role)
    contracts.registry.stake(stake)


@dataclass
class BadTrainer:
    """A trainer of the job that commits ``attack(global model)`` every round."""

    name: str
    contracts: Contracts
    attack: Attack
    server: BlobServer
    model_source: str  # a node URL that serves every round's global model
    committed: dict[int, str] = field(default_factory=dict)  # round -> update digest
    commit_when: Callable[[Job], bool] = lambda job: True  # e.g. only near the deadline

    @property
    def address(self) -> str:
        return self.contracts.client.address

    def enlist(self, stake: int) -> None:
        enlist(self.contracts, self.server.url, ROLE_TRAINER, stake)

    def step(self, job_id: int) -> None:
        jobs = self.contracts.jobs
        job = jobs.job(job_id)
        if job.status != JobStatus.OPEN or jobs.trainer_index(job_id, self.address) is None:
            return
        round_ = job.current_round
        if round_ in self.committed or not self.commit_when(job):
            return
        model_hash = bytes(job.model_hash).hex()
        response = httpx.get(f"{self.model_source}/v1/blobs/{model_hash}", timeout=30)
        response.raise_for_status()
        if hashlib.sha256(response.content).hexdigest() != model_hash:
            return
        crafted = self.attack(decode_state(response.content))
        if isinstance(crafted, bytes):
            blob = crafted
        else:  # named as its own, as a trainer node names its update
            blob = encode_state(crafted, metadata=update_metadata(job_id, round_, self.address))
        digest = self.server.store.put_bytes(blob)
        jobs.commit_update(job_id, round_, digest, 1)  # the weight equal weighting allows
        self.committed[round_] = digest


@dataclass
class Copier:
    """A trainer of the job that does no work: once ``victim`` committed in a round, it commits
    the victim's update hash as it is (``rewrap`` False), or fetches the victim's update from
    ``victim_url`` and commits its tensors re-encoded under its own name (``rewrap`` True)."""

    name: str
    contracts: Contracts
    victim: str
    victim_url: str
    server: BlobServer
    rewrap: bool
    committed: dict[int, str] = field(default_factory=dict)  # round -> update digest

    @property
    def address(self) -> str:
        return self.contracts.client.address

    def enlist(self, stake: int) -> None:
        enlist(self.contracts, self.server.url, ROLE_TRAINER, stake)

    def step(self, job_id: int) -> None:
        jobs = self.contracts.jobs
        job = jobs.job(job_id)
        if job.status != JobStatus.OPEN or jobs.trainer_index(job_id, self.address) is None:
            return
        round_ = job.current_round
        victim = bytes(jobs.commit_of(job_id, round_, self.victim).update_hash)
        if round_ in self.committed or victim == EMPTY:
            return
        digest = victim.hex()
        if self.rewrap:
            response = httpx.get(f"{self.victim_url}/v1/blobs/{digest}", timeout=30)
            response.raise_for_status()  # the victim serves it once its commit is mined
            tensors = decode_blob(response.content).state
            blob = encode_state(tensors, metadata=update_metadata(job_id, round_, self.address))
            digest = self.server.store.put_bytes(blob)
        jobs.commit_update(job_id, round_, digest, 1)
        self.committed[round_] = digest


@dataclass
class WrongAggregator:
    """A committee member that votes for a made-up model hash over the trainers the honest
    aggregators include (all but ``leave_out``): a vote provably wrong for the inputs it names.
    It commits its vote last, once every other member committed, so that its commit opens the
    reveals, and reveals in the same block (see :func:`mine_together`): its reveal always comes
    before the quorum's. Once slashed below its lock it is out of the committee (``removed``)."""

    contracts: Contracts
    leave_out: set[str] = field(default_factory=set)  # trainers the honest aggregators exclude
    voted: dict[int, str] = field(default_factory=dict)  # round -> the hash it voted for
    removed: bool = False

    @property
    def address(self) -> str:
        return self.contracts.client.address

    def enlist(self, stake: int) -> None:
        enlist(self.contracts, "http://127.0.0.1:9", ROLE_AGGREGATOR, stake)

    def step(self, job_id: int) -> None:
        jobs = self.contracts.jobs
        job = jobs.job(job_id)
        if job.status != JobStatus.OPEN:
            return
        if not jobs.is_aggregator(job_id, self.address):
            self.removed = bool(self.voted)  # it was a member: slashed out of the committee
            return
        round_ = job.current_round
        if round_ in self.voted:
            return
        trainers = jobs.trainers(job_id)
        commits = [jobs.commit_of(job_id, round_, t).update_hash for t in trainers]
        if len(trainers) < job.max_trainers or any(bytes(c) == EMPTY for c in commits):
            return  # the contract refuses a vote before every joined trainer committed
        others = [a for a in jobs.aggregators(job_id) if a.lower() != self.address.lower()]
        if not all(jobs.vote_committed(job_id, member) for member in others):
            return
        wrong = hashlib.sha256(f"not the model of round {round_}".encode()).hexdigest()
        leave_out = {t.lower() for t in self.leave_out}
        included = sum(1 << i for i, t in enumerate(trainers) if t.lower() not in leave_out)
        total_weight = bin(included).count("1")  # equal weights
        salt = os.urandom(32)
        commitment = vote_commitment(wrong, included, total_weight, salt, self.address)
        mine_together(self.contracts, [
            ("commit_vote", (job_id, round_, commitment)),
            ("reveal", (job_id, round_, bytes.fromhex(wrong), included_words(included),
                        total_weight, salt)),
        ])  # fmt: skip
        self.voted[round_] = wrong


def mine_together(contracts: Contracts, calls: list[tuple[str, tuple[object, ...]]]) -> None:
    """Send Jobs ``calls`` in order and have Anvil mine them in one block: automine is off
    while they are sent, so no other node can act on the first before the last ran. Gas is
    set, not estimated (a reveal cannot be estimated before its commit is mined)."""
    client, jobs = contracts.client, contracts.jobs
    account = client.account
    assert account is not None
    client.request("evm_setAutomine", [False])
    try:
        for name, args in calls:
            data = jobs._function(name).encode(args)
            tx = {
                "to": jobs.address, "data": "0x" + data.hex(), "from": account.address,
                "value": 0, "chainId": client.chain_id, "gas": MINED_TOGETHER_GAS,
                **client.fees(),
            }  # fmt: skip
            client._send_signed(account, tx, name)
        client.request("evm_mine", [])
    finally:
        client.request("evm_setAutomine", [True])


Adversary = BadTrainer | Copier | WrongAggregator


class Adversaries:
    """Steps every adversary on a job every POLL_SECONDS in a thread, until the block ends."""

    def __init__(self, actors: list[Adversary]) -> None:
        self.actors = actors
        self.errors: list[str] = []

    @contextlib.contextmanager
    def running(self, job_id: int) -> Iterator[None]:
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                for actor in self.actors:
                    try:
                        actor.step(job_id)
                    except (AllmendeError, httpx.HTTPError) as exc:
                        # a lost race (round finalized meanwhile) is expected; keep the text
                        self.errors.append(f"{type(actor).__name__}: {exc}")
                stop.wait(POLL_SECONDS)

        thread = threading.Thread(target=loop, name="adversaries", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=30)
