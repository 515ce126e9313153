"""Differential privacy with secure aggregation: what the spec validator allows, the trainer's
gate, and the noise the unmasked sum carries when every trainer noises before it masks."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from allmende.chain.keys import LocalKey
from allmende.errors import ConfigError
from allmende.learn.dataset import DatasetDecl
from allmende.net.messages import MessageDomain
from allmende.node.config import TrainerPrivacy
from allmende.node.jobspec import parse_jobspec
from allmende.node.roles.plan import make_plan
from allmende.node.roles.privacy import TrainerPrivacyGate
from allmende.privacy.dp import noise_generator, privatize
from allmende.privacy.masking import decode
from allmende.privacy.params import SecureSpec
from allmende.privacy.secagg import RevealLedger, TrainerSession, digest, round_context
from allmende.privacy.unmask import unmask
from allmende.store.state import StateDB

DOMAIN = MessageDomain(chain_id=31337, registry="0x5FbDB2315678afecb367f032d93F642f64180aa3")
JOBS = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
ME = "0x" + "ab" * 20
BASE: dict[str, Any] = {
    "task": "digits-mlp", "rounds": 4, "optimizer": {"lr": 0.1}, "min_trainers": 6,
    "max_trainers": 6, "quorum": 1, "reward_per_round": 0,
    "aggregation": {"rule": "fedavg", "secure": {"clip": 0.5}},
}  # fmt: skip


def spec(**privacy: Any) -> dict[str, Any]:
    section = {"epsilon": 8.0, "delta": 1e-5, "clip_norm": 0.3, "noise": "split", **privacy}
    return {**BASE, "privacy": section}


def test_split_noise_with_secure_aggregation_is_accepted_and_published() -> None:
    job = parse_jobspec(spec())
    assert job.privacy is not None and job.aggregation.secure is not None
    published = job.canonical_bytes()
    assert b'"noise":"split"' in published and b'"secure":{"clip":0.5' in published


@pytest.mark.parametrize(
    ("privacy", "message"),
    [
        ({"noise": "per_update"}, r"\[aggregation.secure\] needs noise = 'split'"),
        ({"sample_rate": 0.5}, r"sample_rate below 1 does not go with \[aggregation.secure\]"),
    ],
)
def test_what_does_not_compose_is_refused_in_one_line(privacy: dict[str, Any], message: str):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_jobspec(spec(**privacy))
    assert "\n" not in str(caught.value)


def test_the_gate_does_not_ask_a_secure_job_for_a_norm_bound(tmp_path: Path) -> None:
    """Masked updates have no norm an aggregator could check, so a norm_bound too small for the
    noise does not keep a secure job's trainer out (it does without secure aggregation)."""
    gate = TrainerPrivacyGate(TrainerPrivacy(), DatasetDecl())
    gate.attach(StateDB.open(tmp_path / "state.sqlite"), jobs_address="0xJOBS")
    tight = {"norm_bound": 0.5, "privacy": {**spec()["privacy"], "epsilon": 1.0}}
    assert gate.gate(make_plan(parse_jobspec({**spec(), **tight})), 1, 0, ME).accepted
    plain = {**spec(), **tight, "aggregation": {"rule": "fedavg"}}
    verdict = gate.gate(make_plan(parse_jobspec(plain)), 1, 0, ME)
    assert not verdict.accepted and "needs norm_bound >=" in verdict.reason


def test_the_unmasked_sum_carries_every_trainers_noise_share() -> None:
    """Each of m trainers clips and adds N(0, (zC)^2 / m), then masks: the unmasked mean is the
    mean of the noisy updates within the fixed-point error, and the sum's noise has std z C,
    the central mechanism's (the noise is not lost to masking, rounding or the ring's clip)."""
    job = parse_jobspec(spec())
    assert job.privacy is not None
    m = job.min_trainers
    z = job.privacy.noise_multiplier(job.rounds)
    sigma = job.privacy.noise_std(rounds=job.rounds, min_trainers=m)
    assert sigma == pytest.approx(z * job.privacy.clip_norm / m**0.5)
    dim = 20_000
    secure = SecureSpec(clip=max(0.5, 8 * sigma + job.privacy.clip_norm))  # nothing clipped
    accounts = [LocalKey.from_key(secrets.token_bytes(32)) for _ in range(m)]
    ctx = round_context(
        job=1, round=0, domain=DOMAIN, jobs_address=JOBS,
        roster=[a.address for a in accounts], spec=secure, max_weight=1,
    )  # fmt: skip
    sessions = {a.address: TrainerSession(ctx, a, ledger=RevealLedger()) for a in accounts}
    keys = {a: s.keys_message() for a, s in sessions.items()}
    shares = {a: s.shares_message(keys) for a, s in sessions.items()}
    for session in sessions.values():
        session.receive_shares(shares)
    global_state = {"w": torch.zeros(dim)}
    rng = np.random.default_rng(0)
    noisy: dict[str, np.ndarray] = {}
    manifests: dict[str, Any] = {}
    bodies: dict[str, bytes] = {}
    for k, (address, session) in enumerate(sessions.items()):
        trained = {"w": torch.from_numpy(rng.normal(0.0, 0.01, dim).astype(np.float32))}
        update, _ = privatize(
            trained, global_state, clip_norm=job.privacy.clip_norm, noise_std=sigma,
            generator=noise_generator(bytes([k + 1]) * 32, job="j", round_=0),
        )  # fmt: skip
        noisy[address] = update["w"].double().numpy()
        manifest, body, clipped = session.masked_update(noisy[address], 1)
        assert clipped == 0
        manifests[address], bodies[address] = manifest, body
    out = unmask(
        ctx, manifests=manifests, bodies=bodies,
        bundles={digest(msg): msg for msg in [*keys.values(), *shares.values()]},
        reveals=[s.reveal_message(manifests) for s in sessions.values()],
    )  # fmt: skip
    assert out.included == ctx.roster
    mean = decode(out.total, ctx.ring) / out.weight
    exact = np.mean(list(noisy.values()), axis=0)
    bound = 2.0 ** -(ctx.ring.scale_bits + 1) + 2.0**-52 * ctx.ring.clip
    assert float(np.max(np.abs(mean - exact))) <= bound
    # the signal's sum is at most m * C in L2 over 20,000 coordinates: its share of the std is
    # below m * C / sqrt(dim) ~ 0.013, against z C ~ 0.2 or more
    noise_std = float(np.std(mean * m))
    assert noise_std == pytest.approx(z * job.privacy.clip_norm, rel=0.05)
