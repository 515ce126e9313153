"""JobSteps: each job stepped on its own task, one step at a time per job, back-off on overruns."""

from __future__ import annotations

import asyncio

import pytest

from allmende.node.roles.steps import JobSteps, StepOutcome


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Steps:
    """A step function whose steps block until the test releases them."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gates: dict[int, asyncio.Event] = {}
        self.outcomes: dict[int, StepOutcome] = {}
        self.in_step: dict[int, int] = {}
        self.most_at_once: dict[int, int] = {}

    def block(self, job_id: int) -> None:
        self.gates[job_id] = asyncio.Event()

    def release(self, job_id: int) -> None:
        self.gates.pop(job_id).set()

    async def __call__(self, job_id: int) -> StepOutcome:
        self.calls.append(job_id)
        self.in_step[job_id] = self.in_step.get(job_id, 0) + 1
        self.most_at_once[job_id] = max(self.most_at_once.get(job_id, 0), self.in_step[job_id])
        try:
            gate = self.gates.get(job_id)
            if gate is not None:
                await gate.wait()
            return self.outcomes.get(job_id, StepOutcome.AGAIN)
        finally:
            self.in_step[job_id] -= 1


async def settle() -> None:
    """Let every ready task run until none is ready (no wall-clock time involved)."""
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_step_that_never_ends_does_not_hold_up_other_jobs() -> None:
    async def main() -> None:
        clock, step = Clock(), Steps()
        steps = JobSteps(step, refresh_seconds=2.0, clock=clock)
        for job_id in (1, 2):
            steps.add(job_id)
        step.block(1)  # job 1's peer never answers
        assert steps.start_due() == [1, 2]
        await settle()
        for _ in range(3):
            clock.now += 2.0
            assert steps.start_due() == [2]  # job 2 stepped again and again; job 1 still runs
            await settle()
        assert step.calls.count(2) == 4 and step.calls.count(1) == 1
        assert steps.running == [1]
        await steps.stop()
        assert steps.running == []

    asyncio.run(main())


def test_one_step_at_a_time_per_job_and_an_event_during_a_step_is_not_lost() -> None:
    async def main() -> None:
        clock, step = Clock(), Steps()
        steps = JobSteps(step, refresh_seconds=2.0, clock=clock)
        steps.add(7)
        step.block(7)
        steps.start_due()
        await settle()
        steps.touch(7)  # an event while the step runs
        assert steps.start_due() == []  # not a second step of the same job
        waiting = asyncio.ensure_future(steps.wait(asyncio.Event().wait()))  # no new block
        await settle()
        assert not waiting.done()
        step.release(7)
        await asyncio.wait_for(waiting, timeout=5)  # the step's end wakes the loop
        assert steps.start_due() == [7]  # and the event's step starts at once
        await settle()
        assert step.most_at_once[7] == 1
        assert step.calls == [7, 7]

    asyncio.run(main())


def test_an_event_is_stepped_at_once_and_refresh_steps_the_others() -> None:
    async def main() -> None:
        clock, step = Clock(), Steps()
        steps = JobSteps(step, refresh_seconds=2.0, clock=clock)
        for job_id in (1, 2):
            steps.add(job_id)
        steps.start_due()
        await settle()
        clock.now += 1.0
        steps.touch(2)
        assert steps.start_due() == [2]  # 1 is not due before its refresh
        await settle()
        clock.now += 1.0
        assert steps.start_due() == [1]
        steps.touch(99)  # an event of a job nobody follows is ignored
        assert 99 not in steps.jobs

    asyncio.run(main())


def test_overruns_back_off_doubling_up_to_the_cap_and_a_step_in_time_resets() -> None:
    async def main() -> None:
        clock, step = Clock(), Steps()
        steps = JobSteps(step, refresh_seconds=2.0, max_backoff_seconds=10.0, clock=clock)
        steps.add(3)
        step.outcomes[3] = StepOutcome.OVERRAN
        pauses = []
        for _ in range(4):
            assert steps.start_due() == [3]
            await settle()
            pauses.append(steps.backoff(3))
            clock.now += steps.backoff(3) - 0.5
            steps.touch(3)
            assert steps.start_due() == []  # even an event waits for the back-off
            clock.now += 0.5
        assert pauses == [4.0, 8.0, 10.0, 10.0]
        step.outcomes[3] = StepOutcome.AGAIN
        steps.start_due()
        await settle()
        assert steps.backoff(3) == 0.0

    asyncio.run(main())


def test_a_job_done_is_forgotten() -> None:
    async def main() -> None:
        clock, step = Clock(), Steps()
        steps = JobSteps(step, refresh_seconds=2.0, clock=clock)
        steps.add(4)
        step.outcomes[4] = StepOutcome.DONE
        steps.start_due()
        await settle()
        assert steps.jobs == []
        clock.now += 100
        steps.touch(4)
        assert steps.start_due() == []

    asyncio.run(main())


def test_wait_returns_for_the_other_waiter_too() -> None:
    async def main() -> None:
        steps = JobSteps(Steps(), refresh_seconds=2.0)
        block = asyncio.Event()
        waiting = asyncio.ensure_future(steps.wait(block.wait()))
        await settle()
        assert not waiting.done()
        block.set()
        await asyncio.wait_for(waiting, timeout=5)

    asyncio.run(main())


@pytest.mark.parametrize("outcome", list(StepOutcome))
def test_stop_cancels_running_steps_whatever_they_would_return(outcome: StepOutcome) -> None:
    async def main() -> None:
        step = Steps()
        steps = JobSteps(step, refresh_seconds=2.0)
        steps.add(5)
        step.block(5)
        step.outcomes[5] = outcome
        steps.start_due()
        await settle()
        await steps.stop()
        assert steps.running == [] and step.in_step[5] == 0

    asyncio.run(main())
