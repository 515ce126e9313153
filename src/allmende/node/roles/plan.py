"""A job as a role works on it: its verified spec and the installed task it names.

A :class:`JobPlan` is made once per job, after the spec was fetched and checked
(:func:`allmende.node.jobdata.fetch_spec`): the task is loaded and its reference model built, the
keys, shapes and dtypes every model and update of the job is checked against.
"""

from __future__ import annotations

from dataclasses import dataclass

from allmende.learn.task import Task, load_task, seeded_state
from allmende.learn.train import TORCH_LOCK
from allmende.node.jobdata import State
from allmende.node.jobspec import JobSpec


@dataclass(frozen=True)
class JobPlan:
    """A job's spec and the installed task it names, checked against the job's chain record."""

    spec: JobSpec
    task: Task
    reference: State  # the task's freshly built model: keys, shapes and dtypes to check against


def make_plan(spec: JobSpec) -> JobPlan:
    """Load the spec's task configured by its ``[data]`` options (TaskError if not installed or
    the options are refused) and build its reference model."""
    task = load_task(spec.task, data=spec.data)
    with TORCH_LOCK:  # seeding a model uses torch's global RNG
        reference = seeded_state(task, seed=spec.seed)
    return JobPlan(spec=spec, task=task, reference=reference)
