# pragma version 0.4.3
"""
@title Allmende training jobs
@notice Escrow, rounds, aggregator quorum and pull payments for training jobs.
        An owner escrows the reward for every round; trainers commit the hash of
        their update; aggregators vote for a (model hash, included trainers) pair.
        The vote that brings a pair to `quorum` votes finalizes the round in the same
        transaction: it records the result, credits the round's reward and slashes,
        through the Registry, the aggregators that voted for another pair. The round
        is then over, so later votes for it are refused ("jobs: wrong round"): only
        dissenting votes cast before the quorum was reached are slashed.
@dev    Invariant: self.balance == total_escrow + total_owed.
        Gas: `commit_update`, and a `propose` that does not complete the quorum, touch
        a fixed handful of slots; the vote that completes it also pays for the round's
        bookkeeping (`_finalize`, linear in trainers and aggregators). Per-trainer
        and per-aggregator slots are reused across rounds and tagged with `round + 1`
        (a round r + 1 commit can only happen after round r is final), and they are
        written nonzero already by `join`, so no commit pays for a fresh slot. The
        history of earlier rounds lives in events and in `round_result`.
"""

from interfaces import IRegistry

MAX_TRAINERS: constant(uint256) = 256
MAX_AGGREGATORS: constant(uint256) = 16
MAX_WEIGHT: constant(uint256) = 2**64 - 1
MAX_REWARD_PER_ROUND: constant(uint256) = 2**128 - 1
BPS: constant(uint256) = 10000

ROLE_TRAINER: constant(uint256) = 1
ROLE_AGGREGATOR: constant(uint256) = 2

STATUS_OPEN: constant(uint256) = 1
STATUS_FINISHED: constant(uint256) = 2
STATUS_CANCELLED: constant(uint256) = 3

# Packed per-trainer / per-aggregator / per-job words: bit 255 is always set so the
# slot never returns to zero; bits 128..254 hold a round tag (round + 1); bits 0..127 a value.
MARK: constant(uint256) = 2**255
LOW_MASK: constant(uint256) = 2**128 - 1
TAG_MASK: constant(uint256) = 2**127 - 1
# Written by `join` into a new aggregator's vote slot so its first vote is not a fresh slot.
NO_VOTE: constant(bytes32) = keccak256("jobs: no vote yet")

# Masks of the SWAR popcount: 0x5555..., 0x3333..., 0x0f0f..., 0x00ff..., 0x0000ffff..., and so on.
POP_M1: constant(uint256) = max_value(uint256) // 3
POP_M2: constant(uint256) = max_value(uint256) // 5
POP_M4: constant(uint256) = max_value(uint256) // 17
POP_M8: constant(uint256) = max_value(uint256) // 257
POP_M16: constant(uint256) = max_value(uint256) // (2**16 + 1)
POP_M32: constant(uint256) = max_value(uint256) // (2**32 + 1)
POP_M64: constant(uint256) = max_value(uint256) // (2**64 + 1)
POP_M128: constant(uint256) = 2**128 - 1


struct Job:
    owner: address
    spec_hash: bytes32
    model_hash: bytes32
    rounds: uint256
    reward_per_round: uint256
    min_trainers: uint256
    max_trainers: uint256
    quorum: uint256
    round_deadline: uint256
    escrow: uint256
    current_round: uint256
    round_start: uint256
    status: uint256
    n_trainers: uint256
    n_aggregators: uint256
    final_model_hash: bytes32


struct RoundResult:
    model_hash: bytes32
    included: uint256
    total_weight: uint256


event JobCreated:
    job_id: indexed(uint256)
    owner: indexed(address)
    spec_hash: bytes32
    model_hash: bytes32
    rounds: uint256
    reward_per_round: uint256

event Joined:
    job_id: indexed(uint256)
    node: indexed(address)
    role: uint256
    index: uint256

event UpdateCommitted:
    job_id: indexed(uint256)
    round: indexed(uint256)
    trainer: indexed(address)
    update_hash: bytes32
    weight: uint256

event Proposed:
    job_id: indexed(uint256)
    round: indexed(uint256)
    aggregator: indexed(address)
    model_hash: bytes32
    included: uint256

event RoundFinalized:
    job_id: indexed(uint256)
    round: indexed(uint256)
    model_hash: bytes32
    included: uint256
    total_weight: uint256

event Credited:
    job_id: indexed(uint256)
    round: indexed(uint256)
    account: indexed(address)
    amount: uint256

event AggregatorSlashed:
    job_id: indexed(uint256)
    round: indexed(uint256)
    aggregator: indexed(address)
    amount: uint256

event JobFinished:
    job_id: indexed(uint256)
    final_model_hash: bytes32

event JobCancelled:
    job_id: indexed(uint256)
    round: uint256

event Refunded:
    job_id: indexed(uint256)
    owner: indexed(address)
    amount: uint256

event Withdrawn:
    account: indexed(address)
    amount: uint256


registry: public(IRegistry)
aggregator_share_bps: public(uint256)
slash_amount: public(uint256)

jobs: public(HashMap[uint256, Job])
next_job_id: public(uint256)
trainer_at: public(HashMap[uint256, HashMap[uint256, address]])
trainer_index: public(HashMap[uint256, HashMap[address, uint256]])
aggregator_at: public(HashMap[uint256, HashMap[uint256, address]])
votes: public(HashMap[uint256, HashMap[uint256, HashMap[bytes32, uint256]]])
owed: public(HashMap[address, uint256])
total_owed: public(uint256)
total_escrow: public(uint256)

# job -> trainer index -> update hash of the trainer's latest commit
_commit_hash: HashMap[uint256, HashMap[uint256, bytes32]]
# job -> trainer index -> MARK | (round + 1) << 128 | weight of the trainer's latest commit
_commit_word: HashMap[uint256, HashMap[uint256, uint256]]
# job -> MARK | number of trainers that committed in the current round
_committed: HashMap[uint256, uint256]
# job -> aggregator -> MARK | (round of latest vote + 1) << 128 | (index + 1)
_aggregator_word: HashMap[uint256, HashMap[address, uint256]]
# job -> aggregator index -> key of the aggregator's latest vote
_vote_key: HashMap[uint256, HashMap[uint256, bytes32]]
_results: HashMap[uint256, HashMap[uint256, RoundResult]]


@deploy
def __init__(registry: IRegistry, aggregator_share_bps: uint256, slash_amount: uint256):
    """
    @notice Create the jobs contract bound to a node registry.
    @dev After deployment the registry's admin must call
         `registry.set_slasher(<this contract>, True)`, or the vote that would
         finalize a round with dissenting aggregators reverts.
    @param registry The Registry contract that holds nodes and stake.
    @param aggregator_share_bps Share of each round's reward for the agreeing aggregators, in basis points.
    @param slash_amount Stake (wei) slashed from each dissenting aggregator.
    """
    assert registry.address != empty(address), "jobs: registry is the zero address"
    assert aggregator_share_bps <= BPS, "jobs: aggregator share exceeds 10000 basis points"
    self.registry = registry
    self.aggregator_share_bps = aggregator_share_bps
    self.slash_amount = slash_amount
    self.next_job_id = 1


@internal
@pure
def _popcount(x: uint256) -> uint256:
    v: uint256 = unsafe_sub(x, (x >> 1) & POP_M1)
    v = unsafe_add(v & POP_M2, (v >> 2) & POP_M2)
    v = unsafe_add(v, v >> 4) & POP_M4
    v = unsafe_add(v, v >> 8) & POP_M8
    v = unsafe_add(v, v >> 16) & POP_M16
    v = unsafe_add(v, v >> 32) & POP_M32
    v = unsafe_add(v, v >> 64) & POP_M64
    return unsafe_add(v, v >> 128) & POP_M128


@internal
@pure
def _tag(word: uint256) -> uint256:
    return (word >> 128) & TAG_MASK


@internal
@view
def _check_open_round(job_id: uint256, round: uint256):
    assert self.jobs[job_id].status == STATUS_OPEN, "jobs: job is not open"
    assert round == self.jobs[job_id].current_round, "jobs: wrong round"


@internal
@view
def _check_pair(job_id: uint256, model_hash: bytes32, included: uint256):
    """
    @dev The cheap checks on a (model hash, included) pair: a model hash, only joined
         trainer indices, at least min_trainers of them, and either every trainer
         committed or the deadline passed. That every included trainer committed in
         this round is checked by `_finalize`, when the pair reaches the quorum.
    """
    assert model_hash != empty(bytes32), "jobs: model hash is empty"
    n_trainers: uint256 = self.jobs[job_id].n_trainers
    if n_trainers < MAX_TRAINERS:
        assert included >> n_trainers == 0, "jobs: included names a trainer index that has not joined"
    assert self._popcount(included) >= self.jobs[job_id].min_trainers, "jobs: included has fewer than min_trainers trainers"
    if self._committed[job_id] & LOW_MASK < n_trainers:
        deadline: uint256 = self.jobs[job_id].round_start + self.jobs[job_id].round_deadline
        assert block.timestamp > deadline, "jobs: a trainer has not committed and the deadline has not passed"


@internal
def _credit(job_id: uint256, round: uint256, account: address, amount: uint256):
    self.owed[account] += amount
    log Credited(job_id=job_id, round=round, account=account, amount=amount)


@external
@payable
def create_job(
    spec_hash: bytes32,
    model_hash: bytes32,
    rounds: uint256,
    reward_per_round: uint256,
    min_trainers: uint256,
    max_trainers: uint256,
    quorum: uint256,
    round_deadline: uint256,
) -> uint256:
    """
    @notice Create a job and escrow its reward for every round; round 0 starts now.
    @param spec_hash SHA-256 of the job spec blob.
    @param model_hash SHA-256 of the initial model blob.
    @param rounds Number of rounds (at least 1).
    @param reward_per_round Wei paid out per finalized round.
    @param min_trainers Fewest included trainers a round result may have.
    @param max_trainers Most trainers that may join (at most MAX_TRAINERS).
    @param quorum Aggregator votes needed to finalize a round (at most MAX_AGGREGATORS).
    @param round_deadline Seconds each round accepts commits, counted from its start.
    @return The new job's id (ids start at 1).
    """
    assert spec_hash != empty(bytes32), "jobs: spec hash is empty"
    assert model_hash != empty(bytes32), "jobs: model hash is empty"
    assert rounds > 0, "jobs: rounds must be at least 1"
    assert reward_per_round > 0 and reward_per_round <= MAX_REWARD_PER_ROUND, "jobs: reward per round must be between 1 and 2**128 - 1 wei"
    assert min_trainers > 0, "jobs: min_trainers must be at least 1"
    assert min_trainers <= max_trainers, "jobs: min_trainers exceeds max_trainers"
    assert max_trainers <= MAX_TRAINERS, "jobs: max_trainers exceeds 256"
    assert quorum > 0 and quorum <= MAX_AGGREGATORS, "jobs: quorum must be between 1 and 16"
    assert round_deadline > 0, "jobs: round deadline must be at least 1 second"
    assert msg.value == rounds * reward_per_round, "jobs: value must equal rounds * reward_per_round"

    job_id: uint256 = self.next_job_id
    self.next_job_id = job_id + 1
    self.jobs[job_id] = Job(
        owner=msg.sender,
        spec_hash=spec_hash,
        model_hash=model_hash,
        rounds=rounds,
        reward_per_round=reward_per_round,
        min_trainers=min_trainers,
        max_trainers=max_trainers,
        quorum=quorum,
        round_deadline=round_deadline,
        escrow=msg.value,
        current_round=0,
        round_start=block.timestamp,
        status=STATUS_OPEN,
        n_trainers=0,
        n_aggregators=0,
        final_model_hash=empty(bytes32),
    )
    self._committed[job_id] = MARK
    self.total_escrow += msg.value
    log JobCreated(
        job_id=job_id,
        owner=msg.sender,
        spec_hash=spec_hash,
        model_hash=model_hash,
        rounds=rounds,
        reward_per_round=reward_per_round,
    )
    return job_id


@external
def join(job_id: uint256, role: uint256):
    """
    @notice Join an open job as a trainer (role 1) or an aggregator (role 2).
    @dev The caller must be active in the registry and declare that role there.
         Trainer indices follow join order and index the `included` bitmap.
    @param job_id The job.
    @param role 1 trainer, 2 aggregator.
    """
    assert self.jobs[job_id].status == STATUS_OPEN, "jobs: job is not open"
    assert role == ROLE_TRAINER or role == ROLE_AGGREGATOR, "jobs: role must be 1 (trainer) or 2 (aggregator)"
    assert staticcall self.registry.is_active(msg.sender), "jobs: caller is not an active node in the registry"
    assert staticcall self.registry.has_role(msg.sender, role), "jobs: caller lacks this role in the registry"
    index: uint256 = 0
    if role == ROLE_TRAINER:
        assert self.trainer_index[job_id][msg.sender] == 0, "jobs: caller is already a trainer of the job"
        index = self.jobs[job_id].n_trainers
        assert index < self.jobs[job_id].max_trainers, "jobs: job already has max_trainers trainers"
        self.trainer_at[job_id][index] = msg.sender
        self.trainer_index[job_id][msg.sender] = index + 1
        self._commit_word[job_id][index] = MARK
        self.jobs[job_id].n_trainers = index + 1
    else:
        assert self._aggregator_word[job_id][msg.sender] == 0, "jobs: caller is already an aggregator of the job"
        index = self.jobs[job_id].n_aggregators
        assert index < MAX_AGGREGATORS, "jobs: job already has 16 aggregators"
        self.aggregator_at[job_id][index] = msg.sender
        self._aggregator_word[job_id][msg.sender] = MARK | (index + 1)
        self._vote_key[job_id][index] = NO_VOTE
        self.jobs[job_id].n_aggregators = index + 1
    log Joined(job_id=job_id, node=msg.sender, role=role, index=index)


@external
def commit_update(job_id: uint256, round: uint256, update_hash: bytes32, weight: uint256):
    """
    @notice Commit the hash of the caller's update for the current round.
    @dev Once per trainer per round, before the round's deadline (inclusive).
    @param job_id The job.
    @param round The job's current round.
    @param update_hash SHA-256 of the update blob.
    @param weight The update's aggregation weight (e.g. number of samples), 1 to 2**64 - 1.
    """
    self._check_open_round(job_id, round)
    deadline: uint256 = self.jobs[job_id].round_start + self.jobs[job_id].round_deadline
    assert block.timestamp <= deadline, "jobs: round deadline has passed"
    position: uint256 = self.trainer_index[job_id][msg.sender]
    assert position != 0, "jobs: caller is not a trainer of the job"
    assert update_hash != empty(bytes32), "jobs: update hash is empty"
    assert weight > 0 and weight <= MAX_WEIGHT, "jobs: weight must be between 1 and 2**64 - 1"
    index: uint256 = position - 1
    assert self._tag(self._commit_word[job_id][index]) != round + 1, "jobs: already committed this round"
    self._commit_word[job_id][index] = MARK | ((round + 1) << 128) | weight
    self._commit_hash[job_id][index] = update_hash
    self._committed[job_id] += 1
    log UpdateCommitted(job_id=job_id, round=round, trainer=msg.sender, update_hash=update_hash, weight=weight)


@external
def propose(job_id: uint256, round: uint256, model_hash: bytes32, included: uint256):
    """
    @notice Vote for the current round's result: the aggregated model and the trainers in it.
            The vote that brings the pair to `quorum` votes also finalizes the round.
    @dev One vote per aggregator per round. Accepted once every trainer committed or
         the deadline passed; `included` must name joined trainers, at least min_trainers.
         The quorum-reaching vote emits `Proposed`, then runs `_finalize` (its events
         follow), and reverts as a whole when finalizing does: when an included trainer
         did not commit this round, or when a dissenter is to be slashed and this
         contract is not an authorized slasher of the Registry. After it, the round is
         over: a later vote for it reverts with "jobs: wrong round", so an aggregator
         that would have dissented after the quorum is not slashed.
    @param job_id The job.
    @param round The job's current round.
    @param model_hash SHA-256 of the aggregated model blob.
    @param included Bitmap of the aggregated trainers (bit i = trainer index i).
    """
    self._check_open_round(job_id, round)
    word: uint256 = self._aggregator_word[job_id][msg.sender]
    assert word != 0, "jobs: caller is not an aggregator of the job"
    assert self._tag(word) != round + 1, "jobs: already voted this round"
    self._check_pair(job_id, model_hash, included)
    key: bytes32 = keccak256(abi_encode(model_hash, included))
    self._aggregator_word[job_id][msg.sender] = MARK | ((round + 1) << 128) | (word & LOW_MASK)
    self._vote_key[job_id][(word & LOW_MASK) - 1] = key
    votes: uint256 = self.votes[job_id][round][key] + 1
    self.votes[job_id][round][key] = votes
    log Proposed(job_id=job_id, round=round, aggregator=msg.sender, model_hash=model_hash, included=included)
    if votes == self.jobs[job_id].quorum:
        self._finalize(job_id, round, model_hash, included, key)


@internal
def _finalize(job_id: uint256, round: uint256, model_hash: bytes32, included: uint256, key: bytes32):
    """
    @dev Finalize the current round with the pair that just reached the quorum; only
         `propose` calls it, after its own checks of the round and the pair. Records the
         result, credits the round's reward (aggregator share split equally among
         agreeing aggregators, the rest pro rata to weight among included trainers;
         rounding dust stays in escrow), slashes every aggregator that voted for another
         pair in this round, and starts the next round or finishes the job.
    @param job_id The job.
    @param round The job's current round.
    @param model_hash The aggregated model's hash, as voted.
    @param included The included-trainers bitmap, as voted.
    @param key keccak256(abi_encode(model_hash, included)), the pair's vote key.
    """
    tag: uint256 = round + 1
    n_trainers: uint256 = self.jobs[job_id].n_trainers
    total_weight: uint256 = 0
    for i: uint256 in range(n_trainers, bound=MAX_TRAINERS):
        if (included >> i) & 1 == 1:
            word: uint256 = self._commit_word[job_id][i]
            assert self._tag(word) == tag, "jobs: an included trainer did not commit this round"
            total_weight += word & LOW_MASK
    self._results[job_id][round] = RoundResult(model_hash=model_hash, included=included, total_weight=total_weight)

    agreeing: DynArray[address, MAX_AGGREGATORS] = []
    dissenting: DynArray[address, MAX_AGGREGATORS] = []
    n_aggregators: uint256 = self.jobs[job_id].n_aggregators
    for i: uint256 in range(n_aggregators, bound=MAX_AGGREGATORS):
        aggregator: address = self.aggregator_at[job_id][i]
        if self._tag(self._aggregator_word[job_id][aggregator]) != tag:
            continue
        if self._vote_key[job_id][i] == key:
            agreeing.append(aggregator)
        else:
            dissenting.append(aggregator)

    reward: uint256 = self.jobs[job_id].reward_per_round
    aggregator_pool: uint256 = reward * self.aggregator_share_bps // BPS
    trainer_pool: uint256 = reward - aggregator_pool
    paid: uint256 = 0
    aggregator_each: uint256 = aggregator_pool // len(agreeing)
    if aggregator_each > 0:
        for aggregator: address in agreeing:
            self._credit(job_id, round, aggregator, aggregator_each)
            paid += aggregator_each
    for i: uint256 in range(n_trainers, bound=MAX_TRAINERS):
        if (included >> i) & 1 == 1:
            amount: uint256 = trainer_pool * (self._commit_word[job_id][i] & LOW_MASK) // total_weight
            if amount > 0:
                self._credit(job_id, round, self.trainer_at[job_id][i], amount)
                paid += amount
    self.jobs[job_id].escrow -= paid
    self.total_escrow -= paid
    self.total_owed += paid

    self.jobs[job_id].model_hash = model_hash
    self.jobs[job_id].current_round = tag
    self.jobs[job_id].round_start = block.timestamp
    self._committed[job_id] = MARK
    log RoundFinalized(job_id=job_id, round=round, model_hash=model_hash, included=included, total_weight=total_weight)
    if tag == self.jobs[job_id].rounds:
        self.jobs[job_id].status = STATUS_FINISHED
        self.jobs[job_id].final_model_hash = model_hash
        log JobFinished(job_id=job_id, final_model_hash=model_hash)

    slash_amount: uint256 = self.slash_amount
    if slash_amount == 0:
        return
    owner: address = self.jobs[job_id].owner
    for aggregator: address in dissenting:
        taken: uint256 = extcall self.registry.slash(aggregator, slash_amount, owner)
        log AggregatorSlashed(job_id=job_id, round=round, aggregator=aggregator, amount=taken)


@external
def cancel(job_id: uint256):
    """
    @notice Cancel a stalled job: its current round's deadline passed and it is not final.
    @param job_id The job; the caller must be its owner.
    """
    assert msg.sender == self.jobs[job_id].owner, "jobs: caller is not the job owner"
    assert self.jobs[job_id].status == STATUS_OPEN, "jobs: job is not open"
    deadline: uint256 = self.jobs[job_id].round_start + self.jobs[job_id].round_deadline
    assert block.timestamp > deadline, "jobs: round deadline has not passed"
    self.jobs[job_id].status = STATUS_CANCELLED
    log JobCancelled(job_id=job_id, round=self.jobs[job_id].current_round)


@external
def refund(job_id: uint256):
    """
    @notice Credit the unspent escrow of a finished or cancelled job to its owner.
    @dev The owner then pulls it with `withdraw`.
    @param job_id The job; the caller must be its owner.
    """
    owner: address = self.jobs[job_id].owner
    assert msg.sender == owner, "jobs: caller is not the job owner"
    status: uint256 = self.jobs[job_id].status
    assert status == STATUS_FINISHED or status == STATUS_CANCELLED, "jobs: job is still open"
    amount: uint256 = self.jobs[job_id].escrow
    assert amount > 0, "jobs: nothing left to refund"
    self.jobs[job_id].escrow = 0
    self.total_escrow -= amount
    self.total_owed += amount
    self.owed[owner] += amount
    log Refunded(job_id=job_id, owner=owner, amount=amount)


@external
@nonreentrant
def withdraw():
    """
    @notice Pay the caller everything it is owed (pull payment).
    """
    amount: uint256 = self.owed[msg.sender]
    assert amount > 0, "jobs: nothing owed"
    self.owed[msg.sender] = 0
    self.total_owed -= amount
    log Withdrawn(account=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)


@view
@external
def is_aggregator(job_id: uint256, account: address) -> bool:
    """
    @notice Whether an account joined a job as an aggregator.
    @param job_id The job.
    @param account The account.
    @return True for an aggregator of the job.
    """
    return self._aggregator_word[job_id][account] != 0


@view
@external
def deadline(job_id: uint256) -> uint256:
    """
    @notice The current round's deadline: commits are accepted up to and including it.
    @param job_id The job.
    @return Unix time of the deadline.
    """
    return self.jobs[job_id].round_start + self.jobs[job_id].round_deadline


@view
@external
def commit_of(job_id: uint256, round: uint256, trainer: address) -> (bytes32, uint256):
    """
    @notice A trainer's commit in a round.
    @dev Only the trainer's most recent commit is stored: for a round in which it did
         not commit, or that it has committed in again since, this returns empty
         values. Every commit is in the `UpdateCommitted` events.
    @param job_id The job.
    @param round The round.
    @param trainer The trainer.
    @return The update hash and weight, or (empty, 0).
    """
    position: uint256 = self.trainer_index[job_id][trainer]
    if position == 0:
        return empty(bytes32), 0
    word: uint256 = self._commit_word[job_id][position - 1]
    if self._tag(word) != round + 1:
        return empty(bytes32), 0
    return self._commit_hash[job_id][position - 1], word & LOW_MASK


@view
@external
def vote_of(job_id: uint256, round: uint256, aggregator: address) -> bytes32:
    """
    @notice The key an aggregator voted for in a round.
    @dev Only the aggregator's most recent vote is stored: for an earlier round this
         returns empty. Every vote is in the `Proposed` events.
    @param job_id The job.
    @param round The round.
    @param aggregator The aggregator.
    @return keccak256(abi_encode(model_hash, included)), or empty when it did not vote.
    """
    word: uint256 = self._aggregator_word[job_id][aggregator]
    if word == 0 or self._tag(word) != round + 1:
        return empty(bytes32)
    return self._vote_key[job_id][(word & LOW_MASK) - 1]


@view
@external
def round_result(job_id: uint256, round: uint256) -> (bytes32, uint256, uint256):
    """
    @notice The finalized result of a round.
    @param job_id The job.
    @param round The round.
    @return The model hash, the included-trainers bitmap and their total weight; empty until final.
    """
    result: RoundResult = self._results[job_id][round]
    return result.model_hash, result.included, result.total_weight
