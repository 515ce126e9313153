"""Which trainers contribute to a round: a public, deterministic draw anyone can check.

Trainer ``address`` is in round ``r`` of job ``job_id`` when the first 8 bytes of
``SHA-256("allmende-sample/v1|seed|job_id|r|address")`` (address in lower case, numbers in
decimal), read as a big-endian integer, are below ``sample_rate * 2**64``. Every input is on
chain or in the spec, so every aggregator computes the same sample and leaves out a commit from
a trainer that was not drawn; the trainer skips such rounds.

Because the draw is public, it gives no privacy amplification (see
:mod:`allmende.privacy.accountant`); what it buys is fewer contributions per trainer, each
accounted in full. Who could abuse it: the job owner picks the seed and so could grind it to
draw one trainer into many rounds; a trainer still contributes to at most
:meth:`~allmende.privacy.spec.PrivacySpec.max_contributions` rounds of a job, so no seed makes
it spend more than the job's ε.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

SAMPLE_DOMAIN = "allmende-sample/v1"


def is_sampled(*, seed: int, job_id: int, round_: int, address: str, sample_rate: float) -> bool:
    """Whether ``address`` is drawn into round ``round_`` of job ``job_id``."""
    if sample_rate >= 1.0:
        return True
    text = f"{SAMPLE_DOMAIN}|{seed}|{job_id}|{round_}|{address.lower()}"
    draw = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return draw < int(sample_rate * 2**64)


def sampled(
    trainers: Iterable[str], *, seed: int, job_id: int, round_: int, sample_rate: float
) -> list[str]:
    """The trainers drawn into the round, in the given order."""
    return [
        trainer
        for trainer in trainers
        if is_sampled(
            seed=seed, job_id=job_id, round_=round_, address=trainer, sample_rate=sample_rate
        )
    ]
