"""The consent decision: does this node agree to work on a job? Pure, so it is easy to test.

A node works only on tasks installed on it, and only on jobs its operator's
:class:`~allmende.node.config.ConsentPolicy` accepts. Every refusal carries a sentence
that says why, which the role logs once per job.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from allmende.node.config import ConsentPolicy


@dataclass(frozen=True)
class Verdict:
    """Whether a job is accepted, and if not, why (a sentence for the node's log)."""

    accepted: bool
    reason: str = ""


ACCEPT = Verdict(True)


def decide_terms(
    policy: ConsentPolicy, *, owner: str, reward_per_round: int, stake_wei: int
) -> Verdict:
    """Accept or refuse a job's on-chain terms: its owner, its per-round reward and the stake
    this node would lock for it. Checked before anything is fetched from the job's owner, so a
    job the node would refuse anyway cannot make it download (or wait for) a spec."""
    if policy.allowed_owners is not None and owner.lower() not in {
        allowed.lower() for allowed in policy.allowed_owners
    }:
        return Verdict(
            False, f"the job owner {owner} is not in the consent policy's allowed_owners"
        )
    if reward_per_round < policy.min_reward_per_round_wei:
        return Verdict(
            False,
            f"the job pays {reward_per_round} wei per round, below the consent policy's "
            f"min_reward_per_round_wei of {policy.min_reward_per_round_wei}",
        )
    if policy.max_stake_wei is not None and stake_wei > policy.max_stake_wei:
        return Verdict(
            False,
            f"the job would lock {stake_wei} wei of this node's stake, above the consent "
            f"policy's max_stake_wei of {policy.max_stake_wei}",
        )
    return ACCEPT


def decide_task(
    policy: ConsentPolicy, *, task: str, installed: Collection[str], tasks_named: bool = False
) -> Verdict:
    """Accept or refuse the task a job's spec names: installed here, and allowed.

    ``tasks_named``: the role works only for tasks the policy names (a trainer: consent by
    default), so ``allowed_tasks`` left out refuses every job.
    """
    if task not in installed:
        listed = ", ".join(sorted(installed)) or "none"
        return Verdict(
            False,
            f"task '{task}' is not installed on this node (installed: {listed}); install the "
            "package that provides it to take such jobs",
        )
    if tasks_named and not policy.allowed_tasks:
        return Verdict(
            False,
            f"this trainer allows no task yet (consent by default); to train for '{task}' jobs "
            f'add allowed_tasks = ["{task}"] to [trainer] in node.toml and restart the node '
            f"(or create the node with `allmende node init --allow-task {task}`)",
        )
    if policy.allowed_tasks is not None and task not in policy.allowed_tasks:
        return Verdict(
            False,
            f"task '{task}' is not in the consent policy's allowed_tasks "
            f"({', '.join(policy.allowed_tasks) or 'none'})",
        )
    return ACCEPT


def decide(
    policy: ConsentPolicy,
    *,
    task: str,
    owner: str,
    reward_per_round: int,
    installed: Collection[str],
    stake_wei: int = 0,
    tasks_named: bool = False,
) -> Verdict:
    """Accept or refuse a job naming ``task`` from ``owner`` paying ``reward_per_round`` wei and
    locking ``stake_wei``: the task first, then the on-chain terms, as an operator would read."""
    verdict = decide_task(policy, task=task, installed=installed, tasks_named=tasks_named)
    if not verdict.accepted:
        return verdict
    return decide_terms(policy, owner=owner, reward_per_round=reward_per_round, stake_wei=stake_wei)
