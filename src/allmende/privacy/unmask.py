"""Step 5 of secure aggregation (:mod:`allmende.privacy.secagg`): the aggregator's unmasking.

Every aggregator runs :func:`unmask` on the same inputs — the manifests and masked bodies the
chain's commits name, the signed bundles those manifests reference — and whatever reveals
reached it. Reconstructed secrets are checked against their commitments (a seed against its
hash, an ``s`` key against its public key), so any ``t`` valid shares give the same secret and
the sum is the same bytes on every honest aggregator.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from allmende.errors import MessageError, SecAggError
from allmende.net.messages import SignedMessage, parse_message
from allmende.privacy import shamir
from allmende.privacy.masking import prg
from allmende.privacy.secagg import (
    KEYS,
    REVEAL,
    SHARES,
    RoundContext,
    _commit,
    _hex,
    _hkdf,
    _pair_seed,
    _public_keys,
    _raw,
    _seed_commitment,
    _sign_of,
    check_signed,
    decide,
    digest,
)

MAX_COMBINATIONS = 64  # share subsets tried before a reconstruction is declared impossible
MIN_INCLUDED = 2  # the sum of fewer updates would be one update in the clear


@dataclass(frozen=True)
class SecureSum:
    """The unmasked sum of the included trainers' ``weight * clip(delta)`` (ring words)."""

    total: np.ndarray  # (dim,) ring dtype
    weight: int
    included: tuple[str, ...]
    excluded: dict[str, str]
    refused_reveals: dict[str, str]


def _reconstruct(shares: dict[int, int], threshold: int, check: Any, what: str) -> bytes:
    points = sorted(shares)
    if len(points) < threshold:
        raise SecAggError(
            f"Only {len(points)} valid shares of {what} arrived, fewer than the threshold "
            f"{threshold}; too many of its partners dropped out to recover this round."
        )
    for subset in itertools.islice(itertools.combinations(points, threshold), MAX_COMBINATIONS):
        value = shamir.combine({x: shares[x] for x in subset})
        if value < 2**256:
            secret = value.to_bytes(32, "big")
            if check(secret):
                return secret
    raise SecAggError(f"The shares of {what} do not reconstruct its committed secret.")


def unmask(
    ctx: RoundContext,
    *,
    manifests: Mapping[str, object],
    bodies: Mapping[str, bytes],
    bundles: Mapping[str, SignedMessage],
    reveals: list[SignedMessage | dict[str, Any]],
) -> SecureSum:
    """Step 5: the sum over :func:`decide`'s included set. ``bundles``: keys and shares
    messages by :func:`digest`; ``reveals``: the reveal messages that arrived (any order;
    invalid ones are refused and reported, never fatal). Raises :class:`SecAggError` when a
    secret cannot be recovered (too many dropped) or fewer than two trainers are included."""
    decision = decide(ctx, manifests)
    included = decision.included
    if len(included) < MIN_INCLUDED:
        raise SecAggError(
            f"Only {len(included)} trainers are included this round; secure aggregation needs "
            f"at least {MIN_INCLUDED} (one update alone would be seen in the clear)."
        )
    dim = int(manifests[included[0]]["dim"])  # type: ignore[index]
    word = ctx.ring.bits // 8
    for trainer in included:
        manifest = manifests[trainer]
        assert isinstance(manifest, dict)
        body = bodies.get(trainer)
        if manifest["dim"] != dim:
            raise SecAggError(f"{trainer}'s masked update has {manifest['dim']} values, not {dim}.")
        if (
            body is None
            or len(body) != dim * word
            or hashlib.sha256(body).hexdigest() != manifest["body"]
        ):
            raise SecAggError(
                f"{trainer}'s masked update is missing or does not match its manifest."
            )

    def bundle(ref: str, kind: str, author: str) -> SignedMessage:
        message = bundles.get(ref)
        if message is None or digest(message) != ref or check_signed(ctx, message, kind) != author:
            raise SecAggError(
                f"The {kind} bundle {ref[:12]} of {author} is missing or not its own."
            )
        return message

    # whose secrets are needed, and the bundles that commit to them
    wanted: dict[str, tuple[str, str, str]] = {}  # trainer -> (kind, keys ref, shares ref)
    for trainer in included:
        manifest = manifests[trainer]
        assert isinstance(manifest, dict)
        wanted[trainer] = ("seed", manifest["keys"], manifest["shares"])
        for peer, refs in decision.partners[trainer].items():
            if peer not in included:
                wanted[peer] = ("key", *refs)
    commitments: dict[str, dict[str, Any]] = {}
    public: dict[str, bytes] = {}
    for trainer, (_, keys_ref, shares_ref) in wanted.items():
        keys = bundle(keys_ref, KEYS, trainer)
        shares = bundle(shares_ref, SHARES, trainer)
        if shares.payload.get("keys") != keys_ref:
            raise SecAggError(f"{trainer}'s shares bundle names other keys.")
        commitments[trainer] = shares.payload
        public[trainer] = _public_keys(ctx, keys)[2]

    # collect the valid revealed shares: share points by trainer whose secret is wanted
    collected: dict[str, dict[int, int]] = {t: {} for t in wanted}
    refused: dict[str, str] = {}
    for raw in reveals:
        try:
            message = raw if isinstance(raw, SignedMessage) else parse_message(raw)
            holder = check_signed(ctx, message, REVEAL)
            for field_name, kind in (("seed_shares", "seed"), ("key_shares", "key")):
                claimed = message.payload.get(field_name)
                if not isinstance(claimed, dict):
                    raise SecAggError(f"its {field_name} is not an object")
                for trainer, value in claimed.items():
                    if wanted.get(trainer, ("",))[0] != kind:
                        continue  # not needed (or the wrong kind): ignored, never used
                    entry = commitments[trainer].get("shares", {}).get(holder)
                    share = _hex(value, shamir.SHARE_BYTES, "a share")
                    if not isinstance(entry, dict) or entry.get(kind) != _commit(
                        ctx, kind, trainer, holder, share
                    ):
                        raise SecAggError(f"its {kind} share of {trainer} matches no commitment")
                    collected[trainer][ctx.index(holder)] = shamir.share_value(share)
        except (SecAggError, MessageError, ValueError) as exc:
            sender = raw.sender if isinstance(raw, SignedMessage) else str(raw.get("sender"))
            refused[sender] = str(exc)

    total = ctx.ring.zeros(dim)
    weight = 0
    for trainer in included:
        manifest = manifests[trainer]
        assert isinstance(manifest, dict)
        words = np.frombuffer(bodies[trainer], dtype=np.dtype(ctx.ring.dtype).newbyteorder("<"))
        total = total + words.astype(ctx.ring.dtype)
        weight += manifest["weight"]
        commitment = commitments[trainer]["seed_commitment"]
        seed = _reconstruct(
            collected[trainer],
            ctx.size.t,
            lambda s, t=trainer, c=commitment: _seed_commitment(ctx, t, s) == c,
            f"{trainer}'s seed",
        )
        total = total - prg(_hkdf(seed, ctx.tag("self")), dim, ctx.ring)
    for peer, (kind, _, _) in sorted(wanted.items()):
        if kind != "key":
            continue
        secret = _reconstruct(
            collected[peer],
            ctx.size.t,
            lambda s, p=peer: (
                _raw(X25519PrivateKey.from_private_bytes(s).public_key()) == public[p]
            ),
            f"{peer}'s key",
        )
        s_key = X25519PrivateKey.from_private_bytes(secret)
        for trainer in included:
            if peer in decision.partners[trainer]:
                mask = prg(_pair_seed(ctx, s_key, public[trainer]), dim, ctx.ring)
                # the trainer added sign * mask; remove it
                total = total - mask if _sign_of(trainer, peer) > 0 else total + mask
    return SecureSum(
        total=total,
        weight=weight,
        included=included,
        excluded=decision.excluded,
        refused_reveals=refused,
    )
