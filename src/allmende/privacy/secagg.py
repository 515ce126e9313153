"""Secure aggregation (SecAgg+, Bell et al. 2020; SecAgg, Bonawitz et al. 2017) for one round.

Aggregators learn the sum of the included trainers' weighted updates and nothing about any one
of them. The steps, and what each party sends (all signed by the node key as EIP-712 messages of
:mod:`allmende.net.messages`, addressed to the Jobs contract: "for every participant of this
job"; the payload names job and round, so a message from another round or job is refused):

1. ``secagg.keys`` (:meth:`TrainerSession.keys_message`): two fresh X25519 public keys, ``c``
   (encrypts shares) and ``s`` (agrees pairwise mask seeds).
2. ``secagg.shares`` (:meth:`TrainerSession.shares_message`): a fresh self-mask seed ``b``;
   Shamir shares (``t`` of ``k``, :mod:`allmende.privacy.params`) of ``b`` and of the ``s``
   secret key for each graph neighbour, each encrypted to that neighbour (ChaCha20-Poly1305 under
   HKDF of the ``c`` agreement, bound to job, round, dealer and holder), with a hash commitment
   to every share and to ``b``.
3. The masked update (:meth:`TrainerSession.masked_update`): ``y = w*d + PRG(b) + sum_v
   ±PRG(s_uv)`` over the *partners* (neighbours whose share to this trainer decrypted and
   matched its commitment), and a manifest naming the partners and the bundles used. The
   manifest's hash is what the trainer commits on chain.
4. ``secagg.reveal`` (:meth:`TrainerSession.reveal_message`): after the commit deadline, the
   chain's accepted commits fix who is in. Every party runs :func:`decide` on the committed
   manifests and gets the same *included* set ``I``. For each partner ``u`` a trainer reveals
   its share of ``b_u`` if ``u`` is in ``I``, else its share of ``u``'s ``s`` key — never both
   (:class:`RevealLedger` records the choice on disk before the message leaves).
5. :func:`allmende.privacy.unmask.unmask` (every aggregator, deterministically): reconstruct
   each included ``b_u`` and each excluded partner's ``s`` key from any ``t`` shares that
   match their commitments
   (the reconstructed seed must match its commitment, the key its public key, so any ``t``
   valid shares give the same bits), and remove the masks: the sum is the same bytes on every
   aggregator whichever shares reached it.

Who is excluded (:func:`decide`), from the manifests alone: a trainer with no accepted commit
(dropped); a malformed manifest; a trainer that names a partner who does not name it back with
the same bundles (a trainer that sends a malformed share, or a share for another peer, is not
named by the neighbour that got it, and is excluded this way); the partners of a dropped
trainer that equivocated (signed two different bundles); partners of an excluded trainer whose
``s`` key fewer than ``t`` included trainers can reveal; a trainer left with no included
partner (its update would be unmasked alone). An aggregator cannot claim that a trainer
dropped: the chain, not the aggregator, says who committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from allmende.chain.addresses import to_checksum_address
from allmende.errors import MessageError, SecAggError
from allmende.net.messages import MessageDomain, SignedMessage, sign_message
from allmende.net.messages import verify_signature as _verify_signature
from allmende.privacy import shamir
from allmende.privacy.masking import Ring, encode, prg
from allmende.privacy.params import GraphSize, SecureSpec, graph_size, scale_bits

KEYS, SHARES, REVEAL = "secagg.keys", "secagg.shares", "secagg.reveal"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class RoundContext:
    """What every participant of one job's round agrees on: the roster (sorted checksummed
    trainer addresses), the graph, the ring, and where signatures are bound."""

    job: int
    round: int
    domain: MessageDomain
    jobs_address: str
    roster: tuple[str, ...]
    size: GraphSize
    ring: Ring
    neighbours: Mapping[str, tuple[str, ...]] = field(repr=False)

    def index(self, address: str) -> int:
        """The 1-based Shamir point of a trainer."""
        return self.roster.index(address) + 1

    def tag(self, *parts: str) -> bytes:
        return "|".join(["allmende.secagg", str(self.job), str(self.round), *parts]).encode()


def round_context(
    *,
    job: int,
    round: int,
    domain: MessageDomain,
    jobs_address: str,
    roster: list[str] | tuple[str, ...],
    spec: SecureSpec,
    max_weight: int,
) -> RoundContext:
    """The round's context; the graph is a Harary graph over the roster permuted by the hash of
    (job, round), complete when :func:`~allmende.privacy.params.graph_size` says so."""
    members = tuple(sorted({to_checksum_address(a) for a in roster}, key=str.lower))
    if len(members) != len(roster):
        raise SecAggError("The round's roster names a trainer twice; the job's list is broken.")
    try:
        size = graph_size(len(members), spec.dropout, degree=spec.degree)
    except ValueError as exc:
        raise SecAggError(f"Secure aggregation cannot run this round: {exc}.") from None
    f = scale_bits(
        trainers=len(members), max_weight=max_weight, clip=spec.clip, ring_bits=spec.ring_bits
    )
    ring = Ring(bits=spec.ring_bits, scale_bits=f, clip=spec.clip)
    seed = f"allmende.secagg.graph|{job}|{round}".encode()
    order = sorted(members, key=lambda a: hashlib.sha256(seed + a.encode()).digest())
    n, half = len(order), size.k // 2
    neighbours: dict[str, tuple[str, ...]] = {}
    for position, address in enumerate(order):
        if size.complete:
            linked = set(members) - {address}
        else:
            linked = {order[(position + d) % n] for d in range(-half, half + 1) if d}
        neighbours[address] = tuple(sorted(linked, key=str.lower))
    return RoundContext(
        job=job,
        round=round,
        domain=domain,
        jobs_address=to_checksum_address(jobs_address),
        roster=members,
        size=size,
        ring=ring,
        neighbours=neighbours,
    )


def digest(message: SignedMessage) -> str:
    """The hex SHA-256 of a signed message's canonical JSON: how manifests name bundles."""
    text = json.dumps(message.model_dump(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _commit(ctx: RoundContext, kind: str, dealer: str, holder: str, share: bytes) -> str:
    return hashlib.sha256(ctx.tag("commit", kind, dealer, holder) + share).hexdigest()


def _seed_commitment(ctx: RoundContext, trainer: str, seed: bytes) -> str:
    return hashlib.sha256(ctx.tag("seed", trainer) + seed).hexdigest()


def _pair_seed(ctx: RoundContext, secret: X25519PrivateKey, public: bytes) -> bytes:
    return _hkdf(secret.exchange(X25519PublicKey.from_public_bytes(public)), ctx.tag("pair"))


def _sign_of(a: str, b: str) -> int:
    """+1 if ``a`` adds the pair's mask (the lower address), -1 if it subtracts it."""
    return 1 if a.lower() < b.lower() else -1


def _hex(value: object, length: int, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * length:
        raise SecAggError(f"{what} is not {length} bytes of hex.")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise SecAggError(f"{what} is not hex.") from None


def check_signed(ctx: RoundContext, message: SignedMessage, kind: str) -> str:
    """The roster member who signed ``message`` for this job and round; else SecAggError.

    Checks kind, the signature (recipient = the Jobs contract, in this chain's domain), that the
    signer is on the roster and that the payload names this job and round (no replay from
    another round or job). Expiry is the transport's check (the message plane refuses expired
    messages on receipt); a bundle referenced by hash is checked after its expiry too.
    """
    if message.kind != kind:
        raise SecAggError(f"Expected a {kind!r} message, got {message.kind!r}.")
    try:
        signer = _verify_signature(
            message, ctx.domain, recipient=ctx.jobs_address, now=message.expiry - 1
        )
    except MessageError as exc:
        raise SecAggError(f"A {kind!r} message is refused: {exc}") from None
    if signer not in ctx.neighbours:
        raise SecAggError(f"A {kind!r} message is from {signer}, not a trainer of the round.")
    payload = message.payload
    if payload.get("job") != ctx.job or payload.get("round") != ctx.round:
        raise SecAggError(
            f"A {kind!r} message from {signer} is for job {payload.get('job')!r} round "
            f"{payload.get('round')!r}, not job {ctx.job} round {ctx.round}; it is a replay."
        )
    return signer


def _public_keys(ctx: RoundContext, message: SignedMessage) -> tuple[str, bytes, bytes]:
    signer = check_signed(ctx, message, KEYS)
    c_pk = _hex(message.payload.get("c_pk"), 32, f"The c key of {signer}")
    s_pk = _hex(message.payload.get("s_pk"), 32, f"The s key of {signer}")
    return signer, c_pk, s_pk


@dataclass(frozen=True)
class Partner:
    """A neighbour whose share to this trainer was valid: its bundles and the shares it dealt."""

    keys: SignedMessage
    shares: SignedMessage
    seed_share: bytes
    key_share: bytes


class RevealLedger:
    """Which kind of share a trainer revealed for each peer and round, kept before it leaves.

    ``record`` raises :class:`SecAggError` when asked to reveal the other kind for the same
    (job, round, peer): revealing both a trainer's seed share and its key share would let an
    aggregator unmask that trainer's update alone. With a ``path`` the ledger is a JSON file
    rewritten atomically (and fsynced) on every new entry, so a restart remembers it.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self._path = Path(path) if path is not None else None
        self._entries: dict[str, str] = {}
        if self._path is not None and self._path.exists():
            self._entries = json.loads(self._path.read_text())

    def record(self, job: int, round: int, peer: str, kind: str) -> None:
        key = f"{job}:{round}:{peer}"
        previous = self._entries.get(key)
        if previous == kind:
            return
        if previous is not None:
            raise SecAggError(
                f"Refusing to reveal {peer}'s {kind} share for job {job} round {round}: its "
                f"{previous} share was revealed already, and both would expose its update."
            )
        self._entries[key] = kind
        if self._path is not None:
            tmp = self._path.with_suffix(".tmp")
            with tmp.open("w") as handle:
                json.dump(self._entries, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(self._path)


class TrainerSession:
    """One trainer's side of one round. ``account`` has ``key`` and ``address`` (the node key)."""

    def __init__(self, ctx: RoundContext, account: Any, *, ledger: RevealLedger) -> None:
        self.ctx = ctx
        self.account = account
        self.address = to_checksum_address(account.address)
        if self.address not in ctx.neighbours:
            raise SecAggError(f"{self.address} is not a trainer of this round.")
        self.ledger = ledger
        self._c = X25519PrivateKey.generate()
        self._s = X25519PrivateKey.generate()
        self._seed = secrets.token_bytes(32)
        self._keys: SignedMessage | None = None
        self._shares: SignedMessage | None = None
        self._peer_keys: dict[str, SignedMessage] = {}
        self.partners: dict[str, Partner] = {}
        self.refused: dict[str, str] = {}  # neighbour -> why it is not a partner

    def _sign(self, kind: str, payload: dict[str, Any]) -> SignedMessage:
        body = {"job": self.ctx.job, "round": self.ctx.round, **payload}
        return sign_message(
            self.account,
            self.ctx.domain,
            kind=kind,
            payload=body,
            recipient=self.ctx.jobs_address,
        )

    def keys_message(self) -> SignedMessage:
        """Step 1: this trainer's two public keys."""
        if self._keys is None:
            self._keys = self._sign(
                KEYS,
                {
                    "c_pk": _raw(self._c.public_key()).hex(),
                    "s_pk": _raw(self._s.public_key()).hex(),
                },
            )
        return self._keys

    def _channel(self, c_pk: bytes, dealer: str, holder: str) -> ChaCha20Poly1305:
        shared = self._c.exchange(X25519PublicKey.from_public_bytes(c_pk))
        return ChaCha20Poly1305(_hkdf(shared, self.ctx.tag("share", dealer, holder)))

    def shares_message(self, keys: Mapping[str, SignedMessage]) -> SignedMessage:
        """Step 2: shares of the seed and the ``s`` key for every neighbour whose valid keys
        arrived (``keys``: whatever the relays gave, by claimed sender; others are ignored)."""
        ctx = self.ctx
        for neighbour in ctx.neighbours[self.address]:
            message = keys.get(neighbour)
            if message is None:
                self.refused[neighbour] = "sent no keys"
                continue
            try:
                signer, _, _ = _public_keys(ctx, message)
            except SecAggError as exc:
                self.refused[neighbour] = str(exc)
                continue
            if signer != neighbour:
                self.refused[neighbour] = f"its keys message is signed by {signer}"
                continue
            self._peer_keys[neighbour] = message
        holders = sorted(self._peer_keys, key=str.lower)
        if len(holders) < ctx.size.t:
            raise SecAggError(
                f"Only {len(holders)} of {len(ctx.neighbours[self.address])} neighbours sent "
                f"valid keys, fewer than the threshold {ctx.size.t}; this trainer sits out."
            )
        points = [ctx.index(h) for h in holders]
        seed_shares = shamir.split(int.from_bytes(self._seed, "big"), points, ctx.size.t)
        s_secret = self._s.private_bytes_raw()
        key_shares = shamir.split(int.from_bytes(s_secret, "big"), points, ctx.size.t)
        entries: dict[str, dict[str, str]] = {}
        for holder, point in zip(holders, points, strict=True):
            seed_share = shamir.share_bytes(seed_shares[point])
            key_share = shamir.share_bytes(key_shares[point])
            c_pk = _hex(self._peer_keys[holder].payload["c_pk"], 32, "c key")
            sealed = self._channel(c_pk, self.address, holder).encrypt(
                bytes(12), seed_share + key_share, ctx.tag("share", self.address, holder)
            )
            entries[holder] = {
                "ct": sealed.hex(),
                "seed": _commit(ctx, "seed", self.address, holder, seed_share),
                "key": _commit(ctx, "key", self.address, holder, key_share),
            }
        self._shares = self._sign(
            SHARES,
            {
                "keys": digest(self.keys_message()),
                "seed_commitment": _seed_commitment(ctx, self.address, self._seed),
                "shares": entries,
            },
        )
        return self._shares

    def receive_shares(self, shares: Mapping[str, SignedMessage]) -> None:
        """Step 2b: keep as partners the neighbours whose share to this trainer is valid."""
        ctx = self.ctx
        for neighbour, keys in self._peer_keys.items():
            message = shares.get(neighbour)
            try:
                if message is None:
                    raise SecAggError("sent no shares")
                if check_signed(ctx, message, SHARES) != neighbour:
                    raise SecAggError("its shares message is signed by another trainer")
                payload = message.payload
                if payload.get("keys") != digest(keys):
                    raise SecAggError("its shares name other keys than it announced")
                entries = payload.get("shares")
                entry = entries.get(self.address) if isinstance(entries, dict) else None
                if not isinstance(entry, dict):
                    raise SecAggError("its shares hold none for this trainer")
                sealed = bytes.fromhex(str(entry.get("ct", "")))
                c_pk = _hex(keys.payload["c_pk"], 32, "c key")
                try:
                    plain = self._channel(c_pk, neighbour, self.address).decrypt(
                        bytes(12), sealed, ctx.tag("share", neighbour, self.address)
                    )
                except InvalidTag:
                    raise SecAggError("its share for this trainer does not decrypt") from None
                seed_share, key_share = plain[: shamir.SHARE_BYTES], plain[shamir.SHARE_BYTES :]
                shamir.share_value(seed_share)
                shamir.share_value(key_share)
                if entry.get("seed") != _commit(
                    ctx, "seed", neighbour, self.address, seed_share
                ) or entry.get("key") != _commit(ctx, "key", neighbour, self.address, key_share):
                    raise SecAggError("its share does not match its commitment")
            except (SecAggError, ValueError) as exc:
                self.refused[neighbour] = str(exc)
                continue
            self.partners[neighbour] = Partner(keys, message, seed_share, key_share)

    def masked_update(self, delta: np.ndarray, weight: int) -> tuple[dict[str, Any], bytes, int]:
        """Step 3: ``(manifest, body, clipped)``: the masked ``weight * clip(delta)`` as ring
        words (little-endian) and its manifest; ``clipped`` counts clipped coordinates."""
        ctx = self.ctx
        if self._shares is None:
            raise SecAggError("Send the shares message before masking the update.")
        y, clipped = encode(delta, weight, ctx.ring)  # (dim,)
        dim = y.shape[0]
        y = y + prg(_hkdf(self._seed, ctx.tag("self")), dim, ctx.ring)
        for neighbour, partner in self.partners.items():
            mask = prg(
                _pair_seed(ctx, self._s, _hex(partner.keys.payload["s_pk"], 32, "s key")),
                dim,
                ctx.ring,
            )
            y = y + mask if _sign_of(self.address, neighbour) > 0 else y - mask
        body = y.astype(np.dtype(ctx.ring.dtype).newbyteorder("<")).tobytes()
        manifest = {
            "version": MANIFEST_VERSION,
            "job": ctx.job,
            "round": ctx.round,
            "trainer": self.address,
            "weight": weight,
            "keys": digest(self.keys_message()),
            "shares": digest(self._shares),
            "partners": {
                v: [digest(p.keys), digest(p.shares)] for v, p in sorted(self.partners.items())
            },
            "ring_bits": ctx.ring.bits,
            "scale_bits": ctx.ring.scale_bits,
            "dim": dim,
            "body": hashlib.sha256(body).hexdigest(),
        }
        return manifest, body, clipped

    def reveal_message(self, manifests: Mapping[str, object]) -> SignedMessage:
        """Step 4: given the manifests the chain accepted (by trainer), reveal for each partner
        the seed share (included) or the key share (not included), never both."""
        decision = decide(self.ctx, manifests)
        seeds: dict[str, str] = {}
        keys: dict[str, str] = {}
        for peer, partner in sorted(self.partners.items()):
            if peer in decision.included:
                self.ledger.record(self.ctx.job, self.ctx.round, peer, "seed")
                seeds[peer] = partner.seed_share.hex()
            else:
                self.ledger.record(self.ctx.job, self.ctx.round, peer, "key")
                keys[peer] = partner.key_share.hex()
        return self._sign(REVEAL, {"seed_shares": seeds, "key_shares": keys})


@dataclass(frozen=True)
class Decision:
    """Who is in the sum (sorted), who committed but is out and why, and each one's partners."""

    included: tuple[str, ...]
    excluded: dict[str, str]
    partners: dict[str, dict[str, tuple[str, str]]]  # valid committed trainer -> its partners


def check_manifest(ctx: RoundContext, trainer: str, manifest: object) -> dict[str, tuple[str, str]]:
    """The partners a committed manifest names; SecAggError if it is malformed."""
    if not isinstance(manifest, dict):
        raise SecAggError("the manifest is not a JSON object")
    expected = {
        "version": MANIFEST_VERSION,
        "job": ctx.job,
        "round": ctx.round,
        "trainer": trainer,
        "ring_bits": ctx.ring.bits,
        "scale_bits": ctx.ring.scale_bits,
    }
    for name, value in expected.items():
        if manifest.get(name) != value:
            raise SecAggError(f"the manifest's {name} is {manifest.get(name)!r}, not {value!r}")
    weight, dim = manifest.get("weight"), manifest.get("dim")
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
        raise SecAggError("the manifest's weight is not a positive integer")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise SecAggError("the manifest's dim is not a positive integer")
    for name in ("keys", "shares", "body"):
        _hex(manifest.get(name), 32, f"the manifest's {name}")
    raw = manifest.get("partners")
    if not isinstance(raw, dict):
        raise SecAggError("the manifest's partners is not an object")
    partners: dict[str, tuple[str, str]] = {}
    for peer, refs in raw.items():
        if peer not in ctx.neighbours[trainer]:
            raise SecAggError(f"the manifest names {peer!r}, not a graph neighbour, as partner")
        if not isinstance(refs, list) or len(refs) != 2:
            raise SecAggError(f"the manifest's bundles of {peer} are not a pair")
        for ref in refs:
            _hex(ref, 32, f"a bundle hash of {peer}")
        partners[peer] = (refs[0], refs[1])
    return partners


def decide(ctx: RoundContext, manifests: Mapping[str, object]) -> Decision:
    """Who is included, from the manifests the chain accepted alone (same answer everywhere)."""
    excluded: dict[str, str] = {}
    partners: dict[str, dict[str, tuple[str, str]]] = {}
    own: dict[str, tuple[str, str]] = {}
    for trainer in sorted(manifests, key=str.lower):
        if trainer not in ctx.neighbours:
            continue
        try:
            partners[trainer] = check_manifest(ctx, trainer, manifests[trainer])
        except SecAggError as exc:
            excluded[trainer] = f"malformed manifest: {exc}"
            continue
        manifest = manifests[trainer]
        assert isinstance(manifest, dict)
        own[trainer] = (manifest["keys"], manifest["shares"])
    # a partner that is committed must name this trainer back, with the same bundles
    for trainer, named in partners.items():
        for peer, refs in named.items():
            if peer in partners and (
                refs != own[peer] or partners[peer].get(trainer) != own[trainer]
            ):
                excluded.setdefault(
                    trainer, f"names {peer} as partner, which does not name it back"
                )
    # the partners of a trainer without a valid commit must agree on its bundles
    references: dict[str, set[tuple[str, str]]] = {}
    for named in partners.values():
        for peer, refs in named.items():
            if peer not in partners:
                references.setdefault(peer, set()).add(refs)
    for peer, seen in references.items():
        if len(seen) > 1:
            for trainer, named in partners.items():
                if peer in named:
                    excluded.setdefault(trainer, f"its partner {peer} signed two bundles")
    # an excluded partner's s key must be recoverable from t included trainers; iterate
    changed = True
    while changed:
        changed = False
        included = {t for t in partners if t not in excluded}
        for trainer in sorted(included, key=str.lower):
            named = partners[trainer]
            if not any(p in included for p in named):
                excluded[trainer] = "no included partner (its update would be unmasked alone)"
                changed = True
                break
            for peer in named:
                if peer in included:
                    continue
                holders = [t for t in included if peer in partners[t]]
                if len(holders) < ctx.size.t:
                    excluded[trainer] = (
                        f"its partner {peer} is out and only {len(holders)} included trainers "
                        f"hold its key shares (threshold {ctx.size.t})"
                    )
                    changed = True
                    break
            if changed:
                break
    included_sorted = tuple(sorted((t for t in partners if t not in excluded), key=str.lower))
    return Decision(included=included_sorted, excluded=excluded, partners=partners)
