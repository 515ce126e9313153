"""Shared set-up of the Disputes tests: a court, providers, a verifier pool, real traces."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import boa
from contract_helpers import ETHER, MIN_STAKE, PROVIDER, VERIFIER, funded, node

from allmende.verify.merkle import Leaf, merkle_proof, merkle_root

PROVIDER_BOND = ETHER // 2
CHALLENGER_BOND = ETHER // 10
WINDOW = 3_600
RESPONSE = 600
VOTE_PERIOD = 900
COMMITTEE = 3
SHARE_BPS = 2_000
JOB, ROUND = 11, 0
K = 4
SEGMENTS = 6
PARAMS = (PROVIDER_BOND, CHALLENGER_BOND, WINDOW, RESPONSE, VOTE_PERIOD, COMMITTEE, SHARE_BPS)


def word(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def synthetic_trace(segments: int = SEGMENTS, k: int = K, tag: str = "") -> list[Leaf]:
    """Leaves of a trace with made-up hashes (the contract never looks inside them)."""
    return [
        Leaf(i * k, word(f"params {tag}{i}"), word(f"batches {i}")) for i in range(segments + 1)
    ]


@dataclass
class Court:
    disputes: Any
    registry: Any
    provider: str
    verifiers: list[str]
    leaves: list[Leaf]


def deploy(deployer: Any, registry: Any, admin: str) -> Any:
    """A court over ``registry``, authorized there as its (first) slasher."""
    with boa.env.prank(admin):
        contract = deployer.deploy(registry.address, *PARAMS)
        registry.set_first_slasher(contract.address)
    return contract


def pool(disputes: Any, registry: Any, count: int) -> list[str]:
    members = [node(registry, VERIFIER, stake=MIN_STAKE) for _ in range(count)]
    for member in members:
        with boa.env.prank(member):
            disputes.join_pool()
    return members


def commit(disputes: Any, provider: str, leaves: list[Leaf], *, k: int = K, job: int = JOB,
           round_: int = ROUND) -> None:  # fmt: skip
    with boa.env.prank(provider):
        disputes.commit_trace(
            job, round_, merkle_root(leaves), word("manifest"), len(leaves) - 1, k
        )


def provider(registry: Any, stake: int = 2 * MIN_STAKE) -> str:
    return node(registry, PROVIDER, stake=stake)


def challenge(disputes: Any, court: Court, segment: int, *, challenger: str | None = None,
              value: int = CHALLENGER_BOND) -> tuple[int, str]:  # fmt: skip
    """Open a challenge on ``segment`` with correct proofs; (id, challenger)."""
    who = challenger or funded()
    first, last = court.leaves[segment], court.leaves[segment + 1]
    with boa.env.prank(who):
        cid = disputes.open_challenge(
            JOB, ROUND, court.provider, segment, first.params, first.batches,
            merkle_proof(court.leaves, segment), last.params, last.batches,
            merkle_proof(court.leaves, segment + 1), value=value,
        )  # fmt: skip
    return cid, who
