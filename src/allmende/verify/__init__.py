"""Compute mode's checks: deterministic training traces, Merkle commitments, re-execution.

:mod:`~allmende.verify.plan` assigns shards and batches, :mod:`~allmende.verify.trace` trains
with a checkpoint every ``k`` steps, :mod:`~allmende.verify.merkle` commits to the checkpoints,
:mod:`~allmende.verify.check` samples and re-executes segments, and
:mod:`~allmende.verify.attacks` holds the cheating providers the tests and benchmarks run.
"""
