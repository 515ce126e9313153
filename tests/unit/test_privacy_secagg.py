"""The SecAgg+ round: sums, dropouts, and the attacks each step invites (real crypto, in one
process; the node roles carry the same messages over the network)."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from allmende.chain.keys import LocalKey
from allmende.errors import SecAggError
from allmende.net.messages import MessageDomain, SignedMessage
from allmende.privacy.masking import decode, encode
from allmende.privacy.params import SecureSpec
from allmende.privacy.secagg import (
    RevealLedger,
    RoundContext,
    TrainerSession,
    check_signed,
    decide,
    digest,
    round_context,
)
from allmende.privacy.unmask import unmask

DOMAIN = MessageDomain(chain_id=31337, registry="0x5FbDB2315678afecb367f032d93F642f64180aa3")
JOBS = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"


@dataclass
class Round:
    ctx: RoundContext
    sessions: dict[str, TrainerSession]
    keys: dict[str, SignedMessage] = field(default_factory=dict)
    shares: dict[str, SignedMessage] = field(default_factory=dict)
    manifests: dict[str, Any] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)
    deltas: dict[str, np.ndarray] = field(default_factory=dict)

    def bundles(self) -> dict[str, SignedMessage]:
        return {digest(m): m for m in [*self.keys.values(), *self.shares.values()]}


def new_round(
    n: int, *, job: int = 7, round: int = 2, max_weight: int = 1, spec: SecureSpec | None = None
) -> Round:
    accounts = [LocalKey.from_key(secrets.token_bytes(32)) for _ in range(n)]
    ctx = round_context(
        job=job,
        round=round,
        domain=DOMAIN,
        jobs_address=JOBS,
        roster=[a.address for a in accounts],
        spec=spec or SecureSpec(clip=1.0),
        max_weight=max_weight,
    )
    sessions = {a.address: TrainerSession(ctx, a, ledger=RevealLedger()) for a in accounts}
    return Round(ctx=ctx, sessions={a: sessions[a] for a in ctx.roster})


def exchange(r: Round) -> None:
    r.keys = {a: s.keys_message() for a, s in r.sessions.items()}
    r.shares = {a: s.shares_message(r.keys) for a, s in r.sessions.items()}
    for session in r.sessions.values():
        session.receive_shares(r.shares)


def mask(r: Round, *, dim: int = 500, committed: list[str] | None = None, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for address in committed if committed is not None else list(r.sessions):
        r.deltas[address] = rng.normal(0.0, 0.4, dim)
        manifest, body, _ = r.sessions[address].masked_update(r.deltas[address], 1)
        r.manifests[address] = manifest
        r.bodies[address] = body


def reveals(r: Round, alive: list[str]) -> list[SignedMessage]:
    return [r.sessions[a].reveal_message(r.manifests) for a in alive]


def exact_mean(r: Round, included: tuple[str, ...]) -> np.ndarray:
    clip = r.ctx.ring.clip
    return np.mean([np.clip(r.deltas[a], -clip, clip) for a in included], axis=0)


def error_bound(r: Round) -> float:
    """The stated fixed-point error of the mean: 2^-(f+1), plus float64 rounding."""
    return 2.0 ** -(r.ctx.ring.scale_bits + 1) + 2.0**-52 * r.ctx.ring.clip


def secure_mean(r: Round, alive: list[str]) -> tuple[np.ndarray, Any]:
    out = unmask(
        r.ctx,
        manifests=r.manifests,
        bodies=r.bodies,
        bundles=r.bundles(),
        reveals=reveals(r, alive),
    )
    return decode(out.total, r.ctx.ring) / out.weight, out


def test_the_sum_equals_the_plain_sum_within_the_fixed_point_error() -> None:
    r = new_round(6)
    exchange(r)
    mask(r)
    mean, out = secure_mean(r, list(r.sessions))
    assert out.included == r.ctx.roster and not out.excluded
    assert np.max(np.abs(mean - exact_mean(r, out.included))) <= error_bound(r)


def test_declared_weights_give_the_weighted_mean() -> None:
    r = new_round(5, max_weight=100, spec=SecureSpec(clip=0.5, ring_bits=32))
    exchange(r)
    rng = np.random.default_rng(3)
    weights = {a: int(rng.integers(1, 101)) for a in r.sessions}
    for a, session in r.sessions.items():
        r.deltas[a] = rng.normal(0.0, 0.3, 200)
        r.manifests[a], r.bodies[a], _ = session.masked_update(r.deltas[a], weights[a])
    out = unmask(
        r.ctx,
        manifests=r.manifests,
        bodies=r.bodies,
        bundles=r.bundles(),
        reveals=reveals(r, list(r.sessions)),
    )
    assert out.weight == sum(weights.values())
    expected = sum(weights[a] * np.clip(r.deltas[a], -0.5, 0.5) for a in r.sessions) / out.weight
    bound = r.ctx.size.n / 2 * 2.0**-r.ctx.ring.scale_bits / out.weight + 1e-12
    assert np.max(np.abs(decode(out.total, r.ctx.ring) / out.weight - expected)) <= bound


def test_a_third_dropping_after_their_masked_input_is_recovered() -> None:
    r = new_round(9)
    exchange(r)
    mask(r)
    dead = list(r.sessions)[:3]  # committed, then killed: no reveal
    mean, out = secure_mean(r, [a for a in r.sessions if a not in dead])
    assert out.included == r.ctx.roster  # their updates are in the sum all the same
    assert np.max(np.abs(mean - exact_mean(r, out.included))) <= error_bound(r)


def test_a_third_dropping_before_committing_is_left_out_of_the_sum() -> None:
    r = new_round(9)
    exchange(r)
    late = list(r.sessions)[-3:]
    survivors = [a for a in r.sessions if a not in late]
    mask(r, committed=survivors)
    mean, out = secure_mean(r, survivors)
    assert out.included == tuple(survivors)
    assert np.max(np.abs(mean - exact_mean(r, out.included))) <= error_bound(r)


def test_mixed_dropouts_on_a_sparse_graph() -> None:
    r = new_round(16)
    assert not r.ctx.size.complete and r.ctx.size.k == 12
    exchange(r)
    order = list(r.sessions)
    late, dead = order[:2], order[2:5]  # 5 = floor(16 / 3) drop in all
    mask(r, committed=[a for a in order if a not in late])
    alive = [a for a in order if a not in late and a not in dead]
    mean, out = secure_mean(r, alive)
    assert set(out.included) == set(order) - set(late)
    assert np.max(np.abs(mean - exact_mean(r, out.included))) <= error_bound(r)


def test_more_dropouts_than_tolerated_cannot_be_unmasked() -> None:
    r = new_round(6)  # k = 5, t = 3: three dead partners leave two shares
    exchange(r)
    mask(r)
    with pytest.raises(SecAggError, match="fewer than the threshold"):
        secure_mean(r, list(r.sessions)[3:])


def test_aggregators_get_the_same_bits_from_different_reveals() -> None:
    r = new_round(7)
    exchange(r)
    mask(r)
    messages = reveals(r, list(r.sessions))
    first = unmask(
        r.ctx, manifests=r.manifests, bodies=r.bodies, bundles=r.bundles(), reveals=messages[:5]
    )
    second = unmask(
        r.ctx,
        manifests=r.manifests,
        bodies=r.bodies,
        bundles=r.bundles(),
        reveals=messages[2:][::-1],
    )
    assert first.total.tobytes() == second.total.tobytes()


def _chi_square_critical(df: int, z: float = 4.75) -> float:
    """Wilson–Hilferty: the chi-square quantile at standard-normal ``z`` (4.75: p ~ 1e-6)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def _chi_square(words: np.ndarray, bits: int) -> float:
    top = (words >> np.uint64(bits - 8)).astype(np.int64)  # the top byte of each ring value
    counts = np.bincount(top, minlength=256)
    expected = len(words) / 256
    return float(np.sum((counts - expected) ** 2 / expected))


def test_one_masked_update_looks_uniform_to_an_aggregator() -> None:
    r = new_round(4)
    exchange(r)
    address = r.ctx.roster[0]
    session = r.sessions[address]
    delta = np.full(1 << 16, 0.9)  # a constant update: as far from uniform as it gets
    _, body, _ = session.masked_update(delta, 1)
    masked = np.frombuffer(body, dtype="<u8")
    plain, _ = encode(delta, 1, r.ctx.ring)
    critical = _chi_square_critical(255)
    assert _chi_square(masked, 64) < critical
    assert _chi_square(plain, 64) > critical  # the same test does see an unmasked update
    low = masked & np.uint64(0xFF)  # and the low byte is uniform too
    assert _chi_square(low << np.uint64(56), 64) < critical


# --- attacks ------------------------------------------------------------------------------


def _tamper(r: Round, dealer: str, change: Any) -> None:
    """Re-sign ``dealer``'s shares message with its entries changed by ``change`` (a malicious
    dealer signs what it likes: the signature is valid, the share is not)."""
    session = r.sessions[dealer]
    payload = dict(r.shares[dealer].payload)
    payload["shares"] = change(dict(payload["shares"]))
    forged = session._sign(
        "secagg.shares", {k: v for k, v in payload.items() if k not in ("job", "round")}
    )
    session._shares = forged
    r.shares[dealer] = forged


def _exchange_with(r: Round, dealer: str, change: Any) -> None:
    r.keys = {a: s.keys_message() for a, s in r.sessions.items()}
    r.shares = {a: s.shares_message(r.keys) for a, s in r.sessions.items()}
    _tamper(r, dealer, change)
    for session in r.sessions.values():
        session.receive_shares(r.shares)


def test_a_trainer_sending_a_malformed_share_is_excluded_and_the_round_completes() -> None:
    r = new_round(6)
    cheater, victim = r.ctx.roster[0], r.ctx.roster[1]

    def corrupt(entries: dict[str, Any]) -> dict[str, Any]:
        ct = bytearray(bytes.fromhex(entries[victim]["ct"]))
        ct[5] ^= 0x01
        entries[victim] = {**entries[victim], "ct": ct.hex()}
        return entries

    _exchange_with(r, cheater, corrupt)
    assert cheater in r.sessions[victim].refused
    assert "decrypt" in r.sessions[victim].refused[cheater]
    mask(r)
    mean, out = secure_mean(r, list(r.sessions))
    assert cheater not in out.included and "does not name it back" in out.excluded[cheater]
    assert np.max(np.abs(mean - exact_mean(r, out.included))) <= error_bound(r)


def test_a_share_meant_for_another_peer_is_refused() -> None:
    r = new_round(6)
    cheater, first, second = r.ctx.roster[0], r.ctx.roster[1], r.ctx.roster[2]

    def swap(entries: dict[str, Any]) -> dict[str, Any]:
        entries[first], entries[second] = entries[second], entries[first]
        return entries

    _exchange_with(r, cheater, swap)
    assert cheater in r.sessions[first].refused and cheater in r.sessions[second].refused
    mask(r)
    mean, out = secure_mean(r, list(r.sessions))
    assert cheater in out.excluded
    assert np.max(np.abs(mean - exact_mean(r, out.included))) <= error_bound(r)


def test_a_share_that_does_not_match_its_commitment_is_refused() -> None:
    r = new_round(5)
    cheater, victim = r.ctx.roster[3], r.ctx.roster[0]

    def recommit(entries: dict[str, Any]) -> dict[str, Any]:
        entries[victim] = {**entries[victim], "seed": "00" * 32}
        return entries

    _exchange_with(r, cheater, recommit)
    assert "commitment" in r.sessions[victim].refused[cheater]


def test_key_messages_from_another_round_or_job_are_replays() -> None:
    r = new_round(5, round=2)
    other = round_context(
        job=7,
        round=3,
        domain=DOMAIN,
        jobs_address=JOBS,
        roster=r.ctx.roster,
        spec=SecureSpec(clip=1.0),
        max_weight=1,
    )
    old = r.sessions[r.ctx.roster[0]].keys_message()
    with pytest.raises(SecAggError, match="replay"):
        check_signed(other, old, "secagg.keys")
    # a round-3 session handed the round-2 keys of a neighbour does not pair with it
    account = r.sessions[r.ctx.roster[1]].account
    session = TrainerSession(other, account, ledger=RevealLedger())
    fresh = {
        a: TrainerSession(other, s.account, ledger=RevealLedger()).keys_message()
        for a, s in r.sessions.items()
    }
    fresh[r.ctx.roster[0]] = old
    session.shares_message(fresh)
    assert "replay" in session.refused[r.ctx.roster[0]]


def test_messages_signed_by_a_stranger_or_for_another_chain_are_refused() -> None:
    r = new_round(4)
    outsider = LocalKey.from_key(secrets.token_bytes(32))
    from allmende.net.messages import sign_message

    message = sign_message(
        outsider, DOMAIN, kind="secagg.keys", payload={"job": 7, "round": 2}, recipient=JOBS
    )
    with pytest.raises(SecAggError, match="not a trainer"):
        check_signed(r.ctx, message, "secagg.keys")
    member = r.sessions[r.ctx.roster[0]].account
    other_chain = MessageDomain(chain_id=1, registry=DOMAIN.registry)
    message = sign_message(
        member, other_chain, kind="secagg.keys", payload={"job": 7, "round": 2}, recipient=JOBS
    )
    with pytest.raises(SecAggError, match="forged or misaddressed"):
        check_signed(r.ctx, message, "secagg.keys")


def test_an_aggregator_claiming_a_live_trainer_dropped_gets_nothing_more(tmp_path: Path) -> None:
    r = new_round(5)
    exchange(r)
    mask(r)
    target, helper = r.ctx.roster[0], r.ctx.roster[1]
    ledger_path = tmp_path / "reveals.json"
    r.sessions[helper].ledger = RevealLedger(ledger_path)
    honest = r.sessions[helper].reveal_message(r.manifests)
    assert target in honest.payload["seed_shares"]
    lie = {a: m for a, m in r.manifests.items() if a != target}  # "target never committed"
    with pytest.raises(SecAggError, match="both would expose"):
        r.sessions[helper].reveal_message(lie)
    r.sessions[helper].ledger = RevealLedger(ledger_path)  # after a restart, too
    with pytest.raises(SecAggError, match="both would expose"):
        r.sessions[helper].reveal_message(lie)


def test_a_wrong_revealed_share_is_refused_and_the_rest_suffice() -> None:
    r = new_round(6)
    exchange(r)
    mask(r)
    messages = reveals(r, list(r.sessions))
    liar = r.sessions[r.ctx.roster[2]]
    payload = messages[2].payload
    bad = {k: "11" * 66 for k in payload["seed_shares"]}
    messages[2] = liar._sign("secagg.reveal", {"seed_shares": bad, "key_shares": {}})
    out = unmask(
        r.ctx, manifests=r.manifests, bodies=r.bodies, bundles=r.bundles(), reveals=messages
    )
    assert "matches no commitment" in out.refused_reveals[liar.address]
    mean = decode(out.total, r.ctx.ring) / out.weight
    assert np.max(np.abs(mean - exact_mean(r, out.included))) <= error_bound(r)


def test_a_manifest_naming_a_non_neighbour_or_the_wrong_round_is_excluded() -> None:
    r = new_round(16)
    exchange(r)
    mask(r)
    first = r.ctx.roster[0]
    outside = next(a for a in r.ctx.roster if a != first and a not in r.ctx.neighbours[first])
    bad = dict(r.manifests)
    bad[first] = {**bad[first], "partners": {**bad[first]["partners"], outside: ["00" * 32] * 2}}
    assert "not a graph neighbour" in decide(r.ctx, bad).excluded[first]
    bad[first] = {**r.manifests[first], "round": 1}
    assert "round" in decide(r.ctx, bad).excluded[first]


def test_a_tampered_masked_body_is_refused() -> None:
    r = new_round(4)
    exchange(r)
    mask(r)
    first = r.ctx.roster[0]
    r.bodies[first] = bytes(len(r.bodies[first]))
    with pytest.raises(SecAggError, match="does not match its manifest"):
        secure_mean(r, list(r.sessions))
