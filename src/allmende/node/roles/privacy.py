"""The trainer's privacy gate: consent to a job's DP, the per-round budget check, the charge.

What the trainer role asks, in a round's order::

    admits(spec)            before joining: DP required? ε and δ small enough? budget left?
    gate(plan, job, round)  before training: drawn into the round? contributions left in the
                            job? budget left for one more? would the noisy update pass the
                            job's norm bound?
    privatize(...)          after training: clip and add noise (allmende.privacy.dp)
    charge(plan, job, round) before the update leaves: the ε is committed to the ledger

Who could abuse it: a job owner whose spec asks for little noise (refused by the node's
``max_job_epsilon``), or whose seed draws this node into every round (capped by the spec's
``max_contributions``, and the node charges every round it contributes to); an aggregator that
would like the noise removed (it never sees the node's noise secret). The node's own crash
between charge and send leaves ε recorded, not spent unrecorded.
"""

from __future__ import annotations

import json
import logging
import math
import os

from allmende.errors import PrivacyError
from allmende.node.config import TrainerPrivacy
from allmende.node.jobdata import State
from allmende.node.jobspec import JobSpec
from allmende.node.roles.plan import JobPlan
from allmende.node.roles.policy import ACCEPT, Verdict
from allmende.privacy.budget import PrivacyLedger
from allmende.privacy.dp import noise_generator, privatize
from allmende.privacy.sampling import is_sampled, sampled
from allmende.store.state import StateDB

log = logging.getLogger(__name__)

SECRET_KEY = "privacy:noise-secret"  # in the state database's kv table, hex
SECRET_BYTES = 32
# The noisy update's L2 norm must stay under the job's norm bound: its mean is about
# sqrt(C^2 + d * sigma^2), and it rarely strays more than a few sigma from it.
NORM_MARGIN_SIGMAS = 8.0


def dataset_key(dataset: object) -> str:
    """A declared dataset as the ledger names it: its declaration as canonical JSON (a file's
    path is absolute, so two homes' ``data.csv`` are two datasets)."""
    dump = getattr(dataset, "model_dump", None)
    fields = dump(mode="json") if callable(dump) else {"dataset": str(dataset)}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def decide_privacy(
    policy: TrainerPrivacy, spec: JobSpec, *, spent: float, dataset: str = "the dataset"
) -> Verdict:
    """Accept or refuse a job's privacy settings under the node's rules, with ``spent`` the ε
    the dataset has spent so far."""
    privacy = spec.privacy
    if privacy is None:
        if policy.requires_dp:
            rule = "budget_epsilon" if policy.budget_epsilon is not None else "max_job_epsilon"
            return Verdict(
                False,
                f"the job has no [privacy] section, and [trainer.privacy] {rule} in node.toml "
                "requires differential privacy for every job",
            )
        return ACCEPT
    if policy.max_job_epsilon is not None and privacy.epsilon > policy.max_job_epsilon:
        return Verdict(
            False,
            f"the job's privacy.epsilon {privacy.epsilon:g} is above [trainer.privacy] "
            f"max_job_epsilon {policy.max_job_epsilon:g} in node.toml",
        )
    if policy.requires_dp and privacy.delta > policy.max_job_delta:
        return Verdict(
            False,
            f"the job's privacy.delta {privacy.delta:g} is above [trainer.privacy] "
            f"max_job_delta {policy.max_job_delta:g} in node.toml",
        )
    if policy.budget_epsilon is not None:
        left = policy.budget_epsilon - spent
        if privacy.epsilon > left + 1e-12:
            return Verdict(
                False,
                f"the job may spend ε {privacy.epsilon:g} of {dataset}, more than the "
                f"{max(left, 0.0):g} left of [trainer.privacy] budget_epsilon "
                f"{policy.budget_epsilon:g} (spent {spent:g}); raise the budget in node.toml "
                "or take jobs with a smaller epsilon",
            )
    return ACCEPT


def drawn_trainers(spec: JobSpec, job_id: int, round_: int, trainers: list[str]) -> list[str]:
    """The trainers drawn into the round by the job's ``[privacy] sample_rate`` (every one
    without it); an aggregator includes commits from these only."""
    if spec.privacy is None or spec.privacy.sample_rate >= 1.0:
        return list(trainers)
    return sampled(
        trainers, seed=spec.seed, job_id=job_id, round_=round_,
        sample_rate=spec.privacy.sample_rate,
    )  # fmt: skip


class TrainerPrivacyGate:
    """The privacy state of one trainer: its rules, its ledger, its noise secret."""

    def __init__(self, policy: TrainerPrivacy, dataset: object) -> None:
        self.policy = policy
        self.dataset = dataset_key(dataset)
        self._ledger: PrivacyLedger | None = None
        self._secret: bytes | None = None
        self._state: StateDB | None = None
        self._jobs_address = ""

    def attach(self, state: StateDB, *, jobs_address: str) -> None:
        """Use the node's state database (the ledger and the noise secret live there)."""
        self._state = state
        self._jobs_address = jobs_address.lower()

    @property
    def ledger(self) -> PrivacyLedger:
        if self._ledger is None:
            if self._state is None:
                raise PrivacyError("The privacy gate is not attached to a state database.")
            self._ledger = PrivacyLedger.open(self._state.path)
        return self._ledger

    def job_key(self, job_id: int) -> str:
        """A job as the ledger names it: the Jobs contract and the job id."""
        return f"{self._jobs_address}:{job_id}"

    def secret(self) -> bytes:
        """The node's noise secret: 32 bytes from ``os.urandom``, made once and kept."""
        if self._secret is None:
            assert self._state is not None
            stored = self._state.get(SECRET_KEY)
            if stored is None:
                stored = os.urandom(SECRET_BYTES).hex()
                self._state.set(SECRET_KEY, stored)
            self._secret = bytes.fromhex(stored)
        return self._secret

    # -- before joining --------------------------------------------------------------------------

    def admits(self, spec: JobSpec) -> Verdict:
        return decide_privacy(
            self.policy, spec, spent=self.ledger.spent(self.dataset), dataset=self.dataset
        )

    # -- each round ------------------------------------------------------------------------------

    def gate(self, plan: JobPlan, job_id: int, round_: int, address: str) -> Verdict:
        """Whether this node contributes to the round (a refusal says why, for the log)."""
        spec, privacy = plan.spec, plan.spec.privacy
        if privacy is None:
            return decide_privacy(self.policy, spec, spent=0.0)  # the node's rules still hold
        if not is_sampled(
            seed=spec.seed, job_id=job_id, round_=round_, address=address,
            sample_rate=privacy.sample_rate,
        ):  # fmt: skip
            return Verdict(False, "this node was not drawn into the round (privacy.sample_rate)")
        job = self.job_key(job_id)
        if self.ledger.charged(self.dataset, job, round_):
            return ACCEPT  # charged before a crash: the ε is counted, the update may go
        done = self.ledger.job_spend(self.dataset, job)
        cap = privacy.max_contributions(spec.rounds)
        if done.contributions >= cap:
            return Verdict(
                False,
                f"this node contributed to {done.contributions} rounds already, the most the "
                f"job's privacy settings allow ({cap}); it sits out the rest",
            )
        if self.policy.budget_epsilon is not None:
            after = privacy.epsilon_after(done.contributions + 1, rounds=spec.rounds)
            total = self.ledger.spent(self.dataset) - done.epsilon + after
            if total > self.policy.budget_epsilon + 1e-12:
                return Verdict(
                    False,
                    f"one more round would bring {self.dataset} to ε {total:.4g}, over "
                    f"[trainer.privacy] budget_epsilon {self.policy.budget_epsilon:g}; this "
                    "node stops contributing to the job",
                )
        sigma = privacy.noise_std(rounds=spec.rounds, min_trainers=spec.min_trainers)
        dims = sum(t.numel() for t in plan.reference.values() if t.is_floating_point())
        expected = math.sqrt(privacy.clip_norm**2 + dims * sigma**2) + NORM_MARGIN_SIGMAS * sigma
        if expected > spec.norm_bound:
            return Verdict(
                False,
                f"the noisy update's norm would be about {expected:.4g}, above the job's "
                f"norm_bound {spec.norm_bound:g}, so aggregators would leave it out; the job "
                f"needs norm_bound >= {math.ceil(expected)}",
            )
        return ACCEPT

    def privatize(
        self, plan: JobPlan, global_state: State, update: State, job_id: int, round_: int
    ) -> State:
        """The update clipped and noised (unchanged for a job without ``[privacy]``)."""
        privacy = plan.spec.privacy
        if privacy is None:
            return update
        spec = plan.spec
        noisy, norm = privatize(
            update,
            global_state,
            clip_norm=privacy.clip_norm,
            noise_std=privacy.noise_std(rounds=spec.rounds, min_trainers=spec.min_trainers),
            generator=noise_generator(self.secret(), job=self.job_key(job_id), round_=round_),
        )
        log.debug("Job %d round %d: update norm %.4g clipped to %g and noised.",
                  job_id, round_, norm, privacy.clip_norm)  # fmt: skip
        return noisy

    def charge(self, plan: JobPlan, job_id: int, round_: int) -> None:
        """Commit the round's ε to the ledger; returns once it is durable. PrivacyError when
        the budget is spent meanwhile (another job charged first): the update is not sent."""
        privacy = plan.spec.privacy
        if privacy is None:
            return
        job = self.job_key(job_id)
        if self.ledger.charged(self.dataset, job, round_):
            return
        done = self.ledger.job_spend(self.dataset, job)
        epsilon = privacy.epsilon_after(done.contributions + 1, rounds=plan.spec.rounds)
        self.ledger.charge(
            self.dataset, job, round_, job_epsilon=epsilon, delta=privacy.delta,
            budget=self.policy.budget_epsilon,
        )  # fmt: skip
        log.info(
            "Job %d round %d: charged the privacy ledger; the job has spent ε %.4g of %s "
            "(%d rounds), the dataset ε %.4g in all.",
            job_id, round_, epsilon, self.dataset, done.contributions + 1,
            self.ledger.spent(self.dataset),
        )  # fmt: skip
