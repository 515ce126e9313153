# pragma version 0.4.3
"""
@title Reentrant receiver (test only)
@notice Owns a Jobs job, gets its escrow credited by cancel + refund, then withdraws
        and tries to withdraw again from inside the payment it receives.
"""

interface IJobs:
    def create_job(spec_hash: bytes32, model_hash: bytes32, rounds: uint256, reward_per_round: uint256, min_trainers: uint256, max_trainers: uint256, quorum: uint256, round_deadline: uint256, committee: DynArray[address, 16], committee_size: uint256, signup_period: uint256, trainer_stake: uint256, aggregator_stake: uint256, weight_cap: uint256) -> uint256: payable
    def cancel(job_id: uint256): nonpayable
    def refund(job_id: uint256): nonpayable
    def withdraw(): nonpayable

jobs: public(IJobs)
# When True the reentry's failure is swallowed, so the outer withdrawal can succeed.
swallow: public(bool)
attempts: public(uint256)
reentry_succeeded: public(bool)
received: public(uint256)


@deploy
def __init__(jobs: IJobs):
    self.jobs = jobs


@external
@payable
def create_job(rounds: uint256, reward_per_round: uint256, round_deadline: uint256) -> uint256:
    return extcall self.jobs.create_job(keccak256("spec"), keccak256("model"), rounds, reward_per_round, 1, 1, 1, round_deadline, [], 1, round_deadline, 0, 0, 0, value=msg.value)


@external
def cancel_and_refund(job_id: uint256):
    extcall self.jobs.cancel(job_id)
    extcall self.jobs.refund(job_id)


@external
def attack(swallow: bool):
    self.swallow = swallow
    extcall self.jobs.withdraw()


@external
@payable
def __default__():
    self.received += msg.value
    if self.attempts > 0:
        return
    self.attempts += 1
    if self.swallow:
        ok: bool = raw_call(self.jobs.address, method_id("withdraw()"), revert_on_failure=False)
        self.reentry_succeeded = ok
    else:
        extcall self.jobs.withdraw()
