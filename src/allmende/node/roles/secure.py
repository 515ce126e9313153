"""Secure aggregation in the roles: the trainer's and the aggregator's side of one round.

The protocol is :mod:`allmende.privacy.secagg`; this module moves its messages and blobs.

**Relay.** The job's aggregators are the bulletin board. A trainer posts each protocol message
(``secagg.keys``, ``secagg.shares``, ``secagg.reveal``, signed by its node key for the Jobs
contract) to every aggregator inside a message-plane message of kind ``secagg.post`` addressed
to that aggregator, and its manifest (``secagg.manifest``). Each aggregator checks what it
receives against the round's context (signature, roster, job and round; a sender relays only its
own messages) and keeps the first message of each kind from each trainer. Anyone reads a board
with ``secagg.board``; a reader merges the boards of all aggregators, so one aggregator that
drops or hides a message does not hide it from anyone who also asks the others.

**Blobs.** The masked update (ring words) and the manifest are blobs in the trainer's store; the
hash of the manifest's canonical JSON is what the trainer commits, with the manifest's weight.
Both go into the store, and the manifest to the aggregators, *before* the commit (a masked update
is useless to a copier), and each aggregator fetches the body as soon as the manifest arrives,
so a trainer that dies right after committing still counts.

**Phases** (each bounded in chain time; ``round_deadline`` is ``D``): keys until every neighbour's
keys are on the boards or ``D/4`` passed; shares until every partner's shares are or ``D/2``
passed; then train (clipped and noised first for a job with ``[privacy]``, whose ``noise =
"split"`` gives each trainer its share of the noise the sum needs), mask, charge the privacy
ledger, store the masked update, post the manifest and commit before ``D``. The commits are
fixed when every active trainer committed or ``D`` passed; then each trainer reveals (once,
recorded before it leaves, :class:`~allmende.privacy.secagg.RevealLedger`). Aggregators unmask
as soon as the reveals suffice; any ``t`` valid shares give the same bits, so every aggregator
proposes the same bytes. A manifest, body or reveal that has not come ``fetch_grace_seconds``
after the deadline is given up on (the trainer counts as dropped, or the attempt is reopened).

**Abuse.** A peer's malformed or oversized message is refused and fails only that peer (the
library excludes a trainer whose shares or manifest are bad, :func:`~allmende.privacy.secagg.
decide`). A board reply is bounded (:data:`MAX_REPLY_BYTES`, one message per trainer and kind);
a manifest by :data:`MAX_MANIFEST_BYTES`; a body by the model's size in ring words. Every call
to a peer has :data:`PEER_SECONDS`. A hostile aggregator can hide messages from its own board
(the other boards still have them) but cannot forge one; the chain, not an aggregator, says who
committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from allmende.chain import Commit, Job
from allmende.chain.addresses import to_checksum_address
from allmende.errors import AllmendeError, MessageError, PeerError, SecAggError, TaskError
from allmende.learn.aggregate import apply_delta, flatten_deltas
from allmende.learn.train import TORCH_LOCK
from allmende.net.messages import SignedMessage, parse_message
from allmende.node.context import on_chain
from allmende.node.jobdata import State, hex_hash
from allmende.node.roles.plan import JobPlan
from allmende.node.roles.rounds import round_deadline
from allmende.privacy.masking import decode
from allmende.privacy.secagg import (
    KEYS,
    REVEAL,
    SHARES,
    RevealLedger,
    RoundContext,
    TrainerSession,
    check_manifest,
    check_signed,
    decide,
    digest,
    round_context,
)
from allmende.privacy.unmask import unmask

if TYPE_CHECKING:
    from allmende.node.roles.aggregator import AggregatorRole
    from allmende.node.roles.trainer import TrainerRole

log = logging.getLogger(__name__)

POST, BOARD = "secagg.post", "secagg.board"
MANIFEST = "secagg.manifest"
KINDS = (KEYS, SHARES, REVEAL)
MAX_MANIFEST_BYTES = 48 * 1024  # fits a message-plane body (64 KiB) with its envelope
MAX_REPLY_BYTES = 16 * 1024 * 1024  # a board reply: at most one message per trainer
PEER_SECONDS = 10.0  # any one post to or read of an aggregator
KEYS_FRACTION, SHARES_FRACTION = 0.25, 0.5  # of the round deadline, from the round's start


def canonical(manifest: dict[str, Any]) -> bytes:
    """A manifest's canonical JSON: what its blob holds and its commit hashes."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def flat_delta(global_state: State, update: State) -> np.ndarray:
    """``update - global`` over the floating entries, float64, shape ``(dim,)``."""
    with TORCH_LOCK:
        return flatten_deltas(global_state, [update])[0].numpy()


def model_dim(global_state: State) -> int:
    return sum(ref.numel() for ref in global_state.values() if ref.is_floating_point())


def check_secure_plan(plan: JobPlan) -> None:
    """A secure job's model must be all floating point (other entries cannot be summed)."""
    for key, ref in plan.reference.items():
        if not ref.is_floating_point():
            raise TaskError(
                f"Secure aggregation sums floating-point tensors only, and the task's model "
                f"entry {key!r} is {ref.dtype}; run this task without [aggregation.secure]."
            )


def roster_fixed(job: Job) -> bool:
    """Whether the round's roster is known alike to everyone: the job's trainer list, read once
    the job is full (before, a trainer joining mid-exchange would give two views of it)."""
    return job.n_trainers >= job.max_trainers


def context_for(
    role: Any, job_id: int, job: Job, plan: JobPlan, trainers: list[str]
) -> RoundContext:
    """The round's context as every participant builds it from the chain and the spec."""
    secure = plan.spec.aggregation.secure
    assert secure is not None
    chain = role.ctx.require_chain()
    return round_context(
        job=job_id,
        round=job.current_round,
        domain=role.ctx.domain,
        jobs_address=chain.deployment.jobs.address,
        roster=trainers,
        spec=secure,
        max_weight=plan.spec.max_weight or 1,
    )


def accepted_manifests(
    manifests: dict[str, dict[str, Any]], commits: dict[str, Commit], dim: int
) -> tuple[dict[str, object], list[str]]:
    """The manifests :func:`~allmende.privacy.secagg.decide` gets, by trainer: each committed
    trainer's manifest by its commit hash, or a reason string (decide excludes it) when its
    weight is not the committed weight or its size is not the model's; and the committed
    trainers whose manifest nobody has. Trainers and aggregators call this alike."""
    accepted: dict[str, object] = {}
    missing: list[str] = []
    for trainer, commit in sorted(commits.items()):
        address = to_checksum_address(trainer)
        manifest = manifests.get(hex_hash(commit.update_hash))
        if manifest is None:
            missing.append(address)
        elif manifest.get("weight") != commit.weight:
            accepted[address] = "its manifest's weight is not the weight it committed"
        elif manifest.get("dim") != dim:
            accepted[address] = f"its manifest's dim is not the model's {dim}"
        else:
            accepted[address] = manifest
    return accepted, missing


def _check_reply(reply: object, what: str) -> dict[str, Any]:
    if not isinstance(reply, dict):
        raise PeerError(f"The {what} reply is not a JSON object.")
    return reply


# -- reading and writing the boards ----------------------------------------------------------


@dataclass
class Boards:
    """What the boards of the job's aggregators hold for one round, merged (first seen kept)."""

    messages: dict[str, dict[str, SignedMessage]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)  # hash -> manifest
    all_reveals: dict[str, SignedMessage] = field(default_factory=dict)  # digest -> reveal

    def add(self, kind: str, message: SignedMessage) -> None:
        self.messages[kind].setdefault(message.sender, message)
        if kind == REVEAL:
            self.all_reveals.setdefault(digest(message), message)

    def add_manifest(self, manifest: object) -> None:
        if isinstance(manifest, dict):
            raw = canonical(manifest)
            if len(raw) <= MAX_MANIFEST_BYTES:
                self.manifests.setdefault(hashlib.sha256(raw).hexdigest(), manifest)


async def _aggregator_endpoints(role: Any, job_id: int, job: Job) -> list[tuple[str, str]]:
    """(address, endpoint) of the job's aggregators other than this node."""
    members = await role.members(job_id, job)
    found = []
    for address in members.aggregators:
        if address.lower() == role.me.lower():
            continue
        endpoint = await role.directory.endpoint(address)
        if endpoint is not None:
            found.append((address, endpoint))
    return found


async def _ask(role: Any, endpoint: str, address: str, kind: str, payload: dict[str, Any]) -> Any:
    peers = role.ctx.require_peers()
    async with asyncio.timeout(PEER_SECONDS):
        return await peers.post_message(
            endpoint, recipient=address, kind=kind, payload=payload,
            max_reply_bytes=MAX_REPLY_BYTES,
        )  # fmt: skip


async def read_boards(
    role: Any, job_id: int, job: Job, ctx: RoundContext, kinds: tuple[str, ...],
    *, local: RoundBoard | None = None, manifests: bool = False,
) -> Boards:  # fmt: skip
    """The merged boards of every aggregator (and this node's own, ``local``): the messages of
    ``kinds`` that pass :func:`check_signed` for the round, and the manifests if asked.
    An aggregator that fails to answer is skipped (the others are read)."""
    merged = Boards()
    if local is not None:
        for kind in kinds:
            for message in local.messages[kind].values():
                merged.add(kind, message)
        for manifest in local.manifests.values():
            merged.add_manifest(manifest)
    wanted = [*kinds, *([MANIFEST] if manifests else [])]
    others = await _aggregator_endpoints(role, job_id, job)

    async def one(address: str, endpoint: str, kind: str) -> tuple[str, Any]:
        payload = {"job": job_id, "round": ctx.round, "kind": kind}
        return kind, await _ask(role, endpoint, address, BOARD, payload)

    calls = [one(a, e, k) for a, e in others for k in wanted]
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, (AllmendeError, TimeoutError)):
                raise outcome
            log.debug("Job %d: a secure-aggregation board did not answer: %s", job_id, outcome)
            continue
        kind, reply = outcome
        try:
            body = _check_reply(reply, "board")
        except PeerError:
            continue
        if kind == MANIFEST:
            listed = body.get("manifests")
            for manifest in (listed if isinstance(listed, list) else [])[: len(ctx.roster)]:
                merged.add_manifest(manifest)
            continue
        listed = body.get("messages")
        for raw in (listed if isinstance(listed, list) else [])[: 2 * len(ctx.roster)]:
            try:
                entry = parse_message(raw) if isinstance(raw, dict) else None
                if entry is not None and check_signed(ctx, entry, kind) == entry.sender:
                    merged.add(kind, entry)
            except (MessageError, SecAggError):
                continue  # a forged or stale entry on a hostile board: ignored
    return merged


# -- the aggregator's board ----------------------------------------------------------------


@dataclass
class RoundBoard:
    """One round's board on an aggregator: the first message of each kind from each trainer,
    and the first manifest each trainer posted (by hash)."""

    ctx: RoundContext
    messages: dict[str, dict[str, SignedMessage]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)  # hash -> manifest
    manifest_of: dict[str, str] = field(default_factory=dict)  # trainer -> hash


class SecureAggregator:
    """The aggregator's side: the board (message handlers) and the unmasking of a round."""

    def __init__(self, role: AggregatorRole) -> None:
        self.role = role
        self._boards: dict[int, RoundBoard] = {}  # job -> its current round's board
        self._fetching: set[asyncio.Task[bytes | None]] = set()

    def register(self) -> None:
        router = self.role.ctx.router
        if POST not in router.handlers:
            router.register(POST, self._on_post)
            router.register(BOARD, self._on_board)

    async def board(self, job_id: int, round_: int, *, create: bool) -> RoundBoard | None:
        """The board of the job's round; built (with ``create``) only for the round the chain
        is in as this node last read it: a post for another round is refused."""
        board = self._boards.get(job_id)
        if board is not None and board.ctx.round == round_:
            return board
        if not create:
            return None
        role = self.role
        job = role._last_read.get(job_id)
        if job is None or job.current_round != round_ or job_id not in role._joined:
            raise SecAggError(
                f"This aggregator is not in round {round_} of job {job_id} (yet); send again."
            )
        plan = role.plans.get(job_id)
        if plan is None or plan.spec.aggregation.secure is None:
            raise SecAggError(f"Job {job_id} is not a secure-aggregation job of this node.")
        if not roster_fixed(job):
            raise SecAggError(f"Job {job_id} is not full yet, so its roster is not fixed.")
        trainers = (await role.members(job_id, job)).trainers
        board = RoundBoard(ctx=context_for(role, job_id, job, plan, trainers))
        self._boards[job_id] = board
        return board

    @staticmethod
    def _ids(payload: dict[str, Any]) -> tuple[int, int]:
        job_id, round_ = payload.get("job"), payload.get("round")
        if not isinstance(job_id, int) or not isinstance(round_, int):
            raise SecAggError("The payload must name job and round as integers.")
        return job_id, round_

    async def _on_post(self, message: Any) -> dict[str, Any]:
        """``secagg.post``: keep a trainer's own protocol message or manifest."""
        job_id, round_ = self._ids(message.payload)
        board = await self.board(job_id, round_, create=True)
        assert board is not None
        sender = to_checksum_address(message.sender)
        if "manifest" in message.payload:
            manifest = message.payload["manifest"]
            check_manifest(board.ctx, sender, manifest)
            raw = canonical(manifest)
            if len(raw) > MAX_MANIFEST_BYTES:
                raise SecAggError(f"The manifest is over {MAX_MANIFEST_BYTES} bytes.")
            ref = hashlib.sha256(raw).hexdigest()
            first = board.manifest_of.setdefault(sender, ref)
            if first != ref:
                return {"accepted": False, "reason": "another manifest of this trainer is kept"}
            board.manifests[ref] = manifest
            self._fetch_body(job_id, sender, manifest)
            return {"accepted": True, "manifest": ref}
        inner = parse_message(message.payload.get("message") or {})
        if inner.kind not in KINDS:
            raise SecAggError(f"{inner.kind!r} is not a secure-aggregation message.")
        signer = check_signed(board.ctx, inner, inner.kind)
        if signer != sender:
            raise SecAggError("A trainer relays only its own secure-aggregation messages.")
        kept = board.messages[inner.kind].setdefault(signer, inner)
        if digest(kept) != digest(inner):
            return {"accepted": False, "reason": f"another {inner.kind} message is kept"}
        return {"accepted": True}

    async def _on_board(self, message: Any) -> dict[str, Any]:
        """``secagg.board``: what this board holds of one kind for the round."""
        job_id, round_ = self._ids(message.payload)
        kind = message.payload.get("kind")
        board = await self.board(job_id, round_, create=False)
        if kind == MANIFEST:
            return {"manifests": [] if board is None else list(board.manifests.values())}
        if kind not in KINDS:
            raise SecAggError(f"{kind!r} is not a secure-aggregation message kind.")
        listed = [] if board is None else list(board.messages[kind].values())
        return {"messages": [m.model_dump() for m in listed]}

    def _fetch_body(self, job_id: int, trainer: str, manifest: dict[str, Any]) -> None:
        """Start fetching a posted manifest's body from its trainer at once."""
        task = asyncio.get_running_loop().create_task(self._body(job_id, trainer, manifest))
        self._fetching.add(task)
        task.add_done_callback(self._fetching.discard)

    async def _body(self, job_id: int, trainer: str, manifest: dict[str, Any]) -> bytes | None:
        role = self.role
        job = role._last_read.get(job_id)
        board = self._boards.get(job_id)
        if job is None or board is None:
            return None
        try:
            endpoints = await role.peers(job_id, job, first=trainer)
            size = int(manifest["dim"]) * board.ctx.ring.bits // 8
            peers = role.ctx.require_peers()
            await peers.fetch_blob(manifest["body"], endpoints, max_bytes=size)
            return role.ctx.store.read_bytes(manifest["body"])
        except (AllmendeError, TimeoutError) as exc:
            log.debug("Job %d: no masked update of %s yet: %s", job_id, trainer, exc)
            return None

    async def aggregate(
        self, job_id: int, job: Job, plan: JobPlan, global_state: State,
        commits: dict[str, Commit],
    ) -> tuple[State, list[tuple[str, int]]] | None:  # fmt: skip
        """The round's new model and its (trainer, weight) contributors, or None while a
        manifest, masked update or reveal is still worth waiting for. Raises
        :class:`~allmende.errors.AggregationError` via SecAggError when the round cannot be
        unmasked even after the grace (too many dropped)."""
        role = self.role
        round_ = job.current_round
        board = await self.board(job_id, round_, create=True)
        assert board is not None
        ctx = board.ctx
        grace = role.section.fetch_grace_seconds
        patience_over = role.now() > round_deadline(job) + grace
        boards = await read_boards(role, job_id, job, ctx, KINDS, local=board, manifests=True)
        dim = model_dim(global_state)
        manifests, missing = accepted_manifests(boards.manifests, commits, dim)
        if missing and not patience_over:
            role.say_once(
                ("secure-manifest", job_id, round_, *missing), logging.INFO,
                f"Job {job_id} round {round_}: waiting for the manifests of {', '.join(missing)}.",
            )  # fmt: skip
            return None
        for address in missing:
            role.exclude(job_id, round_, address, "no aggregator has its manifest")
        decision = decide(ctx, manifests)
        bodies: dict[str, bytes] = {}
        for trainer in decision.included:
            manifest = manifests[trainer]
            assert isinstance(manifest, dict)
            ref = manifest["body"]
            body = role.ctx.store.read_bytes(ref) if role.ctx.store.has(ref) else None
            if body is None:
                body = await self._body(job_id, trainer, manifest)
            if body is None:
                role.say_once(
                    ("secure-body", job_id, round_, trainer), logging.INFO,
                    f"Job {job_id} round {round_}: waiting for {trainer}'s masked update.",
                )  # fmt: skip
                return None
            bodies[trainer] = body
        bundles = {digest(m): m for kind in (KEYS, SHARES) for m in boards.messages[kind].values()}
        try:
            result = await asyncio.to_thread(
                unmask, ctx, manifests=manifests, bodies=bodies, bundles=bundles,
                reveals=list(boards.all_reveals.values()),
            )  # fmt: skip
        except SecAggError as exc:
            role.say_once(
                ("secure-unmask", job_id, round_, job.attempt, str(exc)), logging.INFO,
                f"Job {job_id} round {round_}: cannot unmask the sum yet: {exc}",
            )  # fmt: skip
            if patience_over:
                await role.reopen_when_due(job_id, job, f"the sum could not be unmasked ({exc})")
            return None
        for trainer, why in sorted(decision.excluded.items()):
            role.exclude(job_id, round_, trainer, f"secure aggregation: {why}")
        for sender, why in sorted(result.refused_reveals.items()):
            role.say_once(
                ("secure-reveal", job_id, round_, sender), logging.WARNING,
                f"Job {job_id} round {round_}: refused {sender}'s reveal: {why}",
            )  # fmt: skip
        mean = decode(result.total, ctx.ring) / result.weight  # (dim,) float64
        with TORCH_LOCK:
            new_state = apply_delta(global_state, torch.from_numpy(mean))
        weights = {t: int(manifests[t]["weight"]) for t in result.included}  # type: ignore[index]
        log.info(
            "Job %d round %d: unmasked the sum of %d trainers (ring 2^%d, %d fraction bits).",
            job_id, round_, len(result.included), ctx.ring.bits, ctx.ring.scale_bits,
        )  # fmt: skip
        return new_state, [(t, weights[t]) for t in result.included]


# -- the trainer's side --------------------------------------------------------------------


@dataclass
class TrainerRound:
    """One trainer's progress through one round."""

    session: TrainerSession | None
    posted: dict[str, set[str]] = field(default_factory=dict)  # kind -> aggregators that took it
    shares_sent: bool = False
    partners_known: bool = False
    manifest: dict[str, Any] | None = None
    committed: bool = False
    reveal: SignedMessage | None = None
    out: str | None = None  # why this trainer sits the round out


class SecureTrainer:
    """The trainer's side: exchange keys and shares, mask, commit the manifest, reveal."""

    def __init__(self, role: TrainerRole) -> None:
        self.role = role
        self._rounds: dict[int, TrainerRound] = {}  # job -> its current round's progress
        self._ledger: RevealLedger | None = None

    def ledger(self) -> RevealLedger:
        if self._ledger is None:
            self._ledger = RevealLedger(self.role.ctx.home / "secagg-reveals.json")
        return self._ledger

    async def _context(self, job_id: int, job: Job, plan: JobPlan) -> RoundContext:
        trainers = (await self.role.members(job_id, job)).trainers
        return context_for(self.role, job_id, job, plan, trainers)

    def _progress(self, job_id: int, round_: int) -> TrainerRound | None:
        progress = self._rounds.get(job_id)
        if progress is not None and (
            progress.session is None or progress.session.ctx.round == round_
        ):
            return progress if progress.session is not None else None
        return None

    async def _post(
        self, job_id: int, job: Job, kind: str, round_: int, progress: TrainerRound,
        payload: dict[str, Any],
    ) -> int:  # fmt: skip
        """Post to every aggregator that has not taken ``kind`` yet; how many have it now.
        An aggregator that keeps another message of this kind from this node is counted
        as refusing for good (this node restarted mid-round)."""
        role = self.role
        members = await role.members(job_id, job)
        taken = progress.posted.setdefault(kind, set())
        pending = [a for a in members.aggregators if a not in taken]

        async def one(address: str) -> tuple[str, Any]:
            endpoint = await role.directory.endpoint(address)
            if endpoint is None:
                raise PeerError(f"aggregator {address} has no usable endpoint")
            body = {"job": job_id, "round": round_, **payload}
            return address, await _ask(role, endpoint, address, POST, body)

        for outcome in await asyncio.gather(*(one(a) for a in pending), return_exceptions=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, (AllmendeError, TimeoutError)):
                    raise outcome
                role.say_once(
                    ("secure-post", job_id, round_, kind, str(outcome)), logging.INFO,
                    f"Job {job_id} round {round_}: {kind} not posted yet: {outcome}",
                )  # fmt: skip
                continue
            address, reply = outcome
            if isinstance(reply, dict) and reply.get("accepted") is False:
                progress.out = (
                    f"aggregator {address} keeps another {kind} of this node ({reply.get('reason')}"
                    "); it restarted mid-round"
                )
            taken.add(address)
        return len(taken)

    async def step(
        self, job_id: int, job: Job, plan: JobPlan, model: State, train: Any
    ) -> tuple[str, int] | None:
        """Advance this node's round as far as it can now; the (manifest hash, weight) to
        commit once the update is masked, else None (waiting, or sitting the round out)."""
        role = self.role
        round_ = job.current_round
        if not roster_fixed(job):
            role.say_once(
                ("secure-roster", job_id, round_), logging.INFO,
                f"Job {job_id} round {round_}: {job.n_trainers} of {job.max_trainers} trainers "
                "joined; secure aggregation starts once the roster is full.",
            )  # fmt: skip
            return None
        progress = self._progress(job_id, round_)
        if progress is None:
            ctx = await self._context(job_id, job, plan)
            progress = self._rounds[job_id] = TrainerRound(
                session=TrainerSession(ctx, role.ctx.account, ledger=self.ledger())
            )
        session = progress.session
        assert session is not None
        ctx = session.ctx
        if progress.out is not None:
            return None
        if (
            await self._post(
                job_id,
                job,
                KEYS,
                round_,
                progress,
                {"message": session.keys_message().model_dump()},
            )
            == 0
        ):
            return None  # fmt: skip
        if progress.out is not None:
            role.say_once(
                ("secure-out", job_id, round_),
                logging.WARNING,
                f"Job {job_id} round {round_}: sits this round out: {progress.out}.",
            )
            return None  # fmt: skip
        now = role.now()
        neighbours = ctx.neighbours[session.address]
        if not progress.shares_sent:
            boards = await read_boards(role, job_id, job, ctx, (KEYS,))
            keys = boards.messages[KEYS]
            keys_until = job.round_start + KEYS_FRACTION * job.round_deadline
            if not set(neighbours) <= set(keys) and now <= keys_until:
                return None
            try:
                session.shares_message(keys)
            except SecAggError as exc:
                progress.out = str(exc)
                log.warning("Job %d round %d: %s", job_id, round_, exc)
                return None
            progress.shares_sent = True
        shares_msg = session._shares
        assert shares_msg is not None
        if (
            await self._post(
                job_id, job, SHARES, round_, progress, {"message": shares_msg.model_dump()}
            )
            == 0
        ):
            return None  # fmt: skip
        if progress.out is not None:
            return None
        if not progress.partners_known:
            role.say_once(
                ("secure-shares", job_id, round_),
                logging.INFO,
                f"Job {job_id} round {round_}: sent its secure-aggregation shares.",
            )
            boards = await read_boards(role, job_id, job, ctx, (SHARES,))
            shares = boards.messages[SHARES]
            dealers = set(session._peer_keys)
            shares_until = job.round_start + SHARES_FRACTION * job.round_deadline
            if not dealers <= set(shares) and role.now() <= shares_until:
                return None
            session.receive_shares(shares)
            progress.partners_known = True
            for peer, why in sorted(session.refused.items()):
                log.warning("Job %d round %d: %s is not a partner: %s", job_id, round_, peer, why)
        if progress.manifest is None:
            # train clips and noises the update for a job with [privacy] ("split" noise): the
            # noise goes in before the mask, so the unmasked sum carries every share of it
            update, examples, metrics = await asyncio.to_thread(train, plan, model, job_id, round_)
            weight = plan.spec.weight_of(examples)
            delta = await asyncio.to_thread(flat_delta, model, update)
            manifest, body, clipped = await asyncio.to_thread(session.masked_update, delta, weight)
            if clipped:
                log.warning(
                    "Job %d round %d: clipped %d of %d update values to ±%g (secure "
                    "aggregation's clip); raise clip in the spec if many are.",
                    job_id, round_, clipped, delta.shape[0], ctx.ring.clip,
                )  # fmt: skip
            role.privacy.charge(plan, job_id, round_)  # durable before the masked update leaves
            store = role.ctx.store
            role.ctx.state.pin(store.put_bytes(body), f"job:{job_id}:masked:{round_}")
            ref = store.put_bytes(canonical(manifest))
            role.ctx.state.pin(ref, f"job:{job_id}:update:{round_}")
            progress.manifest = manifest
            log.info(
                "Job %d round %d: trained on %d examples (loss %.4f), masked its update with %d "
                "partners.", job_id, round_, examples, metrics["loss"], len(session.partners),
            )  # fmt: skip
        manifest = progress.manifest
        if await self._post(job_id, job, MANIFEST, round_, progress, {"manifest": manifest}) == 0:
            return None
        if progress.out is not None:
            return None
        return hashlib.sha256(canonical(manifest)).hexdigest(), int(manifest["weight"])

    def committed(self, job_id: int, round_: int) -> None:
        progress = self._progress(job_id, round_)
        if progress is not None:
            progress.committed = True

    async def reveal(self, job_id: int, job: Job, plan: JobPlan) -> None:
        """After this node committed: once the round's commits are fixed, reveal its shares
        (seed shares of the included, key shares of the others) to every aggregator."""
        role = self.role
        round_ = job.current_round
        progress = self._progress(job_id, round_)
        if progress is None or not progress.committed or progress.session is None:
            return  # a restarted node: its partners' reveals suffice without its own
        session = progress.session
        ctx = session.ctx
        if progress.reveal is not None and len(progress.posted.get(REVEAL, ())) == len(
            (await role.members(job_id, job)).aggregators
        ):
            return
        trainers = list(ctx.roster)
        commits = {t: await on_chain(role.jobs.commit_of, job_id, round_, t) for t in trainers}
        done = {t: c for t, c in commits.items() if c.weight > 0}
        deadline = round_deadline(job)
        if len(done) < job.n_active_trainers and role.now() <= deadline:
            return  # the commits are not fixed yet
        boards = await read_boards(role, job_id, job, ctx, (), manifests=True)
        own = hashlib.sha256(canonical(progress.manifest or {})).hexdigest()
        boards.manifests.setdefault(own, progress.manifest or {})
        manifests, missing = accepted_manifests(boards.manifests, done, model_dim(plan.reference))
        if missing and role.now() <= deadline + plan_grace(role):
            return  # a committed manifest may still show
        if progress.reveal is None:
            progress.reveal = session.reveal_message(manifests)
        message = progress.reveal
        posted = await self._post(
            job_id, job, REVEAL, round_, progress, {"message": message.model_dump()}
        )
        if posted:
            log.info("Job %d round %d: revealed its shares to %d aggregators.", job_id, round_,
                     posted)  # fmt: skip


def plan_grace(role: Any) -> float:
    """How long after the deadline a trainer waits for a committed manifest to show."""
    return float(getattr(role.section, "fetch_grace_seconds", 10.0))
