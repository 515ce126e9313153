"""Which job a role steps when: each job on its own task, one step at a time per job.

A role knows many jobs, some of them hostile (an owner that serves its spec a byte a minute, a
peer that never answers). Stepping them one after another would let the slowest hold up all the
others, so :class:`JobSteps` runs each job's step as its own asyncio task:

- a job is stepped when one of its events arrived (``touch``) or ``refresh_seconds`` passed;
- never two steps of one job at once; an event that arrives during a step makes the next step
  start as soon as this one ends;
- a step that overran its budget (:attr:`StepOutcome.OVERRAN`) puts the job on a back-off that
  doubles with each overrun in a row, up to ``max_backoff_seconds``, so a job that stalls every
  step costs the node a bounded share of its time;
- a job whose step returned :attr:`StepOutcome.DONE` is forgotten.

It knows nothing of chains or roles: the step function is given, so it is tested on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

MAX_BACKOFF_SECONDS = 300.0


class StepOutcome(enum.Enum):
    AGAIN = "again"  # step the job again later
    DONE = "done"  # the role is done with the job
    OVERRAN = "overran"  # the step was cancelled at its budget


class JobSteps:
    """The step tasks of a role's jobs (see the module docstring)."""

    def __init__(
        self,
        step: Callable[[int], Awaitable[StepOutcome]],
        *,
        refresh_seconds: float,
        max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._step = step
        self._refresh = refresh_seconds
        self._max_backoff = max_backoff_seconds
        self._clock = clock
        self._last: dict[int, float] = {}  # job id -> when its last step started
        self._touched: set[int] = set()
        self._running: dict[int, asyncio.Task[None]] = {}
        self._overruns: dict[int, int] = {}  # job id -> overruns in a row
        self._not_before: dict[int, float] = {}  # job id -> end of its back-off
        self._ended = asyncio.Event()  # a step ended with an event waiting for its job

    @property
    def jobs(self) -> list[int]:
        """The jobs still followed, in id order."""
        return sorted(self._last)

    @property
    def running(self) -> list[int]:
        return sorted(self._running)

    def add(self, job_id: int) -> None:
        """Follow ``job_id`` (a new job): its first step is due at once."""
        self._last.setdefault(job_id, float("-inf"))

    def touch(self, job_id: int) -> None:
        """An event of ``job_id`` arrived: step it at once (or right after its running step)."""
        if job_id in self._last:
            self._touched.add(job_id)

    def start_due(self) -> list[int]:
        """Start a step for every job that is due and not running; the jobs started."""
        now = self._clock()
        started = []
        for job_id in sorted(self._last):
            if job_id in self._running or now < self._not_before.get(job_id, now):
                continue
            if job_id in self._touched or now - self._last[job_id] >= self._refresh:
                self._touched.discard(job_id)
                self._last[job_id] = now
                self._running[job_id] = asyncio.create_task(
                    self._run(job_id), name=f"job-{job_id}-step"
                )
                started.append(job_id)
        return started

    async def _run(self, job_id: int) -> None:
        try:
            outcome = await self._step(job_id)
        finally:
            self._running.pop(job_id, None)
        if outcome is StepOutcome.DONE:
            self._forget(job_id)
            return
        if outcome is StepOutcome.OVERRAN:
            overruns = self._overruns.get(job_id, 0) + 1
            self._overruns[job_id] = overruns
            pause = min(self._refresh * 2**overruns, self._max_backoff)
            self._not_before[job_id] = self._clock() + pause
        else:
            self._overruns.pop(job_id, None)
            self._not_before.pop(job_id, None)
        if job_id in self._touched:
            self._ended.set()

    def _forget(self, job_id: int) -> None:
        self._last.pop(job_id, None)
        self._overruns.pop(job_id, None)
        self._not_before.pop(job_id, None)
        self._touched.discard(job_id)

    def _waiting_for_a_step(self) -> bool:
        """Whether a touched job could be stepped now (not running, not backing off)."""
        now = self._clock()
        return any(
            job_id not in self._running and now >= self._not_before.get(job_id, now)
            for job_id in self._touched
        )

    def backoff(self, job_id: int) -> float:
        """Seconds until ``job_id`` may be stepped again (0 when it may now)."""
        return max(0.0, self._not_before.get(job_id, 0.0) - self._clock())

    async def wait(self, other: Coroutine[Any, Any, None]) -> None:
        """Wait for ``other`` (e.g. a new block) or for a step that ended with an event for its
        job waiting, whichever comes first."""
        self._ended.clear()
        if self._waiting_for_a_step():
            other.close()
            return
        waiters = [asyncio.ensure_future(other), asyncio.ensure_future(self._ended.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            for waiter in waiters:
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    async def stop(self) -> None:
        """Cancel the running steps and wait for them to end."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
