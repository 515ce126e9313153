# pragma version 0.4.3
"""
@title Allmende training jobs
@notice Escrow, committees, rounds, aggregator quorum, stake locks and pull payments for
        training jobs, built to be safe among strangers.
        An owner escrows the reward for every round and picks a committee of aggregators:
        a named one (the owner lists its members; it is sealed at creation) or an open one
        (staked volunteers sign up for `signup_period` seconds, then anyone calls `seal`,
        which draws `committee_size` of them weighted by stake, and a strict majority of
        the committee is the quorum). Trainers and aggregators lock a bond
        (`trainer_stake`, `aggregator_stake`) in the Registry when they join; it stays
        locked until `challenge_window` seconds after the job ended, then `release` frees it.
        Trainers commit the hash of their update (weight 1, or up to the job's
        `weight_cap`); committee members vote for a (model hash, included trainers) pair.
        The vote that brings a pair to `quorum` votes finalizes the round in the same
        transaction: it records the result, credits the round's reward and slashes the
        aggregators that voted for the same included set but another model hash
        (aggregation is deterministic, so that vote is provably wrong); a vote that names
        another included set is neither paid nor slashed. A round whose deadline passed
        can be reopened (up to MAX_REOPENS times) so that a dead round gets a new commit
        and vote window; only then may the owner cancel. A trainer that misses
        MISSED_ROUNDS_ALLOWED finalized rounds in a row can be evicted by anyone.
@dev    Invariant: self.balance == total_escrow + total_owed.
        Gas: `commit_update`, and a `propose` that does not complete the quorum, touch a
        fixed handful of slots and make no external call; the vote that completes it also
        pays for the round's bookkeeping (`_finalize`, linear in trainers and committee).
        Per-trainer and per-aggregator slots are reused across rounds and tagged with
        `round + 1` / `attempt + 1`, and they are written nonzero already by `join` (or
        `create_job`), so no commit or vote pays for a fresh slot except the first vote
        for a pair in an attempt. The history of earlier rounds lives in events and in
        `round_result`.
        Jobs is the only contract that can slash the stake it locked, so it knows
        locally when it slashed someone: the good-standing check of `propose` is local.
"""

from interfaces import IRegistry

MAX_TRAINERS: constant(uint256) = 256
MAX_COMMITTEE: constant(uint256) = 16
MAX_VOLUNTEERS: constant(uint256) = 64
MAX_ROUNDS: constant(uint256) = 10_000
MAX_PERIOD: constant(uint256) = 2_592_000
MAX_REOPENS: constant(uint256) = 3
MISSED_ROUNDS_ALLOWED: constant(uint256) = 3
MAX_WEIGHT: constant(uint256) = 2**64 - 1
MAX_REWARD_PER_ROUND: constant(uint256) = 2**128 - 1
BPS: constant(uint256) = 10000

ROLE_TRAINER: constant(uint256) = 1
ROLE_AGGREGATOR: constant(uint256) = 2

STATUS_OPEN: constant(uint256) = 1
STATUS_FINISHED: constant(uint256) = 2
STATUS_CANCELLED: constant(uint256) = 3

MARK: constant(uint256) = 2**255
M31: constant(uint256) = 2**31 - 1
M32: constant(uint256) = 2**32 - 1
M63: constant(uint256) = 2**63 - 1
M64: constant(uint256) = 2**64 - 1
M128: constant(uint256) = 2**128 - 1
TAG_MASK: constant(uint256) = 2**127 - 1

# Per-trainer commit word (job -> trainer index): bit 255 MARK (never zero again);
# bits 128..254 round + 1 of the latest commit (0: none yet); bit 127 EVICTED;
# bits 64..126 the round the trainer joined in (only read before its first commit);
# bits 0..63 the latest commit's weight.
EVICTED: constant(uint256) = 2**127
JOINED_SHIFT: constant(uint256) = 64

# Per-job counts word: MARK | n_trainers << 128 | n_active_trainers << 64 | commits this round.
TRAINERS_SHIFT: constant(uint256) = 128
ACTIVE_SHIFT: constant(uint256) = 64

# Per-aggregator word (job -> address): bits 224..254 round + 1 and bits 192..223
# attempt + 1 of its latest vote; bits 64..191 the high 128 bits of
# keccak256(abi_encode(included)) of that vote; bits 0..7 committee index + 1 (0: not in
# the committee); then the flags below.
VOTE_ROUND_SHIFT: constant(uint256) = 224
VOTE_ATTEMPT_SHIFT: constant(uint256) = 192
INCLUDED_SHIFT: constant(uint256) = 64
INDEX_MASK: constant(uint256) = 255
MEMBER: constant(uint256) = 256  # a committee member holding its aggregator lock
REMOVED: constant(uint256) = 512  # slashed for a provably wrong vote: no more votes
VOLUNTEER: constant(uint256) = 1024  # signed up for an open committee
# Written into a new aggregator's vote slot so its first vote is not a fresh slot.
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
    committee_size: uint256
    signup_end: uint256
    sealed: bool
    trainer_stake: uint256
    aggregator_stake: uint256
    weight_cap: uint256
    attempt: uint256
    reopens: uint256
    n_active_trainers: uint256
    ended_at: uint256
    n_volunteers: uint256


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

event CommitteeSealed:
    job_id: indexed(uint256)
    committee: DynArray[address, MAX_COMMITTEE]

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

event AggregatorRemoved:
    job_id: indexed(uint256)
    round: indexed(uint256)
    aggregator: indexed(address)

event RoundReopened:
    job_id: indexed(uint256)
    round: indexed(uint256)
    reopens: uint256

event TrainerEvicted:
    job_id: indexed(uint256)
    trainer: indexed(address)
    index: uint256
    slashed: uint256

event StakeReleased:
    job_id: indexed(uint256)
    node: indexed(address)
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
challenge_window: public(uint256)

jobs: public(HashMap[uint256, Job])
next_job_id: public(uint256)
trainer_at: public(HashMap[uint256, HashMap[uint256, address]])
trainer_index: public(HashMap[uint256, HashMap[address, uint256]])
aggregator_at: public(HashMap[uint256, HashMap[uint256, address]])
volunteer_at: public(HashMap[uint256, HashMap[uint256, address]])
# job -> attempt -> keccak256(abi_encode(model_hash, included)) -> votes
votes: public(HashMap[uint256, HashMap[uint256, HashMap[bytes32, uint256]]])
owed: public(HashMap[address, uint256])
total_owed: public(uint256)
total_escrow: public(uint256)

# job -> trainer index -> update hash of the trainer's latest commit
_commit_hash: HashMap[uint256, HashMap[uint256, bytes32]]
# job -> trainer index -> commit word (see above)
_commit_word: HashMap[uint256, HashMap[uint256, uint256]]
# job -> counts word (see above)
_counts: HashMap[uint256, uint256]
# job -> address -> aggregator word (see above)
_aggregator_word: HashMap[uint256, HashMap[address, uint256]]
# job -> aggregator -> key of its latest vote
_vote_key: HashMap[uint256, HashMap[address, bytes32]]
# job -> node -> whether it released its lock
_released: HashMap[uint256, HashMap[address, bool]]
_results: HashMap[uint256, HashMap[uint256, RoundResult]]


@deploy
def __init__(registry: IRegistry, aggregator_share_bps: uint256, slash_amount: uint256, challenge_window: uint256):
    """
    @notice Create the jobs contract bound to a node registry.
    @dev After deployment the registry's admin calls
         `registry.set_first_slasher(<this contract>)`; until then `join` with a nonzero
         stake reverts (the Registry refuses the lock). If the Registry later revokes this
         contract, finalization still succeeds: slashing then takes nothing.
    @param registry The Registry contract that holds nodes and stake.
    @param aggregator_share_bps Share of each round's reward for the agreeing aggregators, in basis points.
    @param slash_amount Locked stake (wei) slashed from an aggregator that voted a wrong model hash.
    @param challenge_window Seconds after a job ended before its participants can release their locks.
    """
    assert registry.address != empty(address), "jobs: registry is the zero address"
    assert aggregator_share_bps <= BPS, "jobs: aggregator share exceeds 10000 basis points"
    assert challenge_window <= MAX_PERIOD, "jobs: challenge window exceeds 30 days"
    self.registry = registry
    self.aggregator_share_bps = aggregator_share_bps
    self.slash_amount = slash_amount
    self.challenge_window = challenge_window
    self.next_job_id = 1


@internal
@pure
def _popcount(x: uint256) -> uint256:
    """
    @dev The number of set bits of `x` (SWAR popcount).
    """
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
    """
    @dev The round tag (round + 1 of the latest commit) of a commit word.
    """
    return (word >> 128) & TAG_MASK


@internal
@view
def _check_open_round(job_id: uint256, round: uint256):
    """
    @dev Reverts unless the job is open and `round` is its current round.
    """
    assert self.jobs[job_id].status == STATUS_OPEN, "jobs: job is not open"
    assert round == self.jobs[job_id].current_round, "jobs: wrong round"


@internal
@view
def _check_pair(job_id: uint256, model_hash: bytes32, included: uint256):
    """
    @dev The cheap checks on a (model hash, included) pair: a model hash, only joined
         trainer indices, at least min_trainers of them, and either every active trainer
         committed or the deadline passed. That every included trainer committed in
         this round is checked by `_finalize`, when the pair reaches the quorum.
    """
    assert model_hash != empty(bytes32), "jobs: model hash is empty"
    counts: uint256 = self._counts[job_id]
    n_trainers: uint256 = (counts >> TRAINERS_SHIFT) & M64
    if n_trainers < MAX_TRAINERS:
        assert included >> n_trainers == 0, "jobs: included names a trainer index that has not joined"
    assert self._popcount(included) >= self.jobs[job_id].min_trainers, "jobs: included has fewer than min_trainers trainers"
    if counts & M64 < (counts >> ACTIVE_SHIFT) & M64:
        deadline: uint256 = self.jobs[job_id].round_start + self.jobs[job_id].round_deadline
        assert block.timestamp > deadline, "jobs: a trainer has not committed and the deadline has not passed"


@internal
def _credit(job_id: uint256, round: uint256, account: address, amount: uint256):
    """
    @dev Credit `amount` of a round's reward to `account` (the caller moves it out of escrow).
    """
    self.owed[account] += amount
    log Credited(job_id=job_id, round=round, account=account, amount=amount)


@internal
def _lock(node: address, job_id: uint256, amount: uint256):
    """
    @dev Lock `amount` of the node's stake for the job in the Registry (nothing when 0);
         reverts when the node lacks the free stake or this contract is not a slasher.
    """
    if amount > 0:
        extcall self.registry.lock(node, job_id, amount)


@internal
def _try_slash(node: address, job_id: uint256, amount: uint256, beneficiary: address) -> uint256:
    """
    @dev Slash through the Registry without ever reverting: a revoked slasher (or any
         failure of the call) takes 0.
    """
    success: bool = False
    response: Bytes[32] = b""
    success, response = raw_call(
        self.registry.address,
        abi_encode(node, job_id, amount, beneficiary, method_id=method_id("slash(address,uint256,uint256,address)")),
        max_outsize=32,
        revert_on_failure=False,
    )
    if not success or len(response) != 32:
        return 0
    return convert(response, uint256)


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
    committee: DynArray[address, MAX_COMMITTEE],
    committee_size: uint256,
    signup_period: uint256,
    trainer_stake: uint256,
    aggregator_stake: uint256,
    weight_cap: uint256,
) -> uint256:
    """
    @notice Create a job and escrow its reward for every round.
    @dev A named committee (`committee` non-empty) is sealed now and round 0 starts now;
         an open one (`committee` empty) takes volunteers for `signup_period` seconds and
         round 0 starts at `seal`.
    @param spec_hash SHA-256 of the job spec blob.
    @param model_hash SHA-256 of the initial model blob.
    @param rounds Number of rounds, 1 to MAX_ROUNDS.
    @param reward_per_round Wei paid out per finalized round.
    @param min_trainers Fewest included trainers a round result may have.
    @param max_trainers Most active trainers the job may have (at most MAX_TRAINERS).
    @param quorum Committee votes needed to finalize a round: 1 to len(committee) for a
           named committee, a strict majority of committee_size for an open one.
    @param round_deadline Seconds each round (or reopened round) accepts commits, 1 to MAX_PERIOD.
    @param committee The named committee's members, in order; empty for an open committee.
    @param committee_size len(committee) for a named committee; 1 to MAX_COMMITTEE volunteers to draw for an open one.
    @param signup_period 0 for a named committee; 1 to MAX_PERIOD seconds of signup for an open one.
    @param trainer_stake Wei each trainer locks in the Registry when it joins (0: none).
    @param aggregator_stake Wei each aggregator (and volunteer) locks when it joins (0: none).
    @param weight_cap 0: every commit has weight 1; else declared weights 1 to weight_cap (at most 2**64 - 1).
    @return The new job's id (ids start at 1).
    """
    assert spec_hash != empty(bytes32), "jobs: spec hash is empty"
    assert model_hash != empty(bytes32), "jobs: model hash is empty"
    assert rounds > 0 and rounds <= MAX_ROUNDS, "jobs: rounds must be between 1 and 10000"
    assert reward_per_round > 0 and reward_per_round <= MAX_REWARD_PER_ROUND, "jobs: reward per round must be between 1 and 2**128 - 1 wei"
    assert min_trainers > 0, "jobs: min_trainers must be at least 1"
    assert min_trainers <= max_trainers, "jobs: min_trainers exceeds max_trainers"
    assert max_trainers <= MAX_TRAINERS, "jobs: max_trainers exceeds 256"
    assert round_deadline > 0 and round_deadline <= MAX_PERIOD, "jobs: round deadline must be between 1 second and 30 days"
    assert weight_cap <= MAX_WEIGHT, "jobs: weight cap exceeds 2**64 - 1"
    job_id: uint256 = self.next_job_id
    named: bool = len(committee) > 0
    if named:
        assert committee_size == len(committee), "jobs: committee_size must equal the named committee's length"
        assert signup_period == 0, "jobs: a named committee has no signup period"
        assert quorum > 0 and quorum <= committee_size, "jobs: quorum must be between 1 and the committee size"
        for i: uint256 in range(len(committee), bound=MAX_COMMITTEE):
            member: address = committee[i]
            assert member != empty(address), "jobs: committee member is the zero address"
            assert self._aggregator_word[job_id][member] == 0, "jobs: committee names a member twice"
            self._aggregator_word[job_id][member] = i + 1
            self.aggregator_at[job_id][i] = member
    else:
        assert committee_size > 0 and committee_size <= MAX_COMMITTEE, "jobs: committee size must be between 1 and 16"
        assert quorum <= committee_size and 2 * quorum > committee_size, "jobs: an open committee needs a strict-majority quorum"
        assert signup_period > 0 and signup_period <= MAX_PERIOD, "jobs: signup period must be between 1 second and 30 days"
    assert msg.value == rounds * reward_per_round, "jobs: value must equal rounds * reward_per_round"

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
        round_start=block.timestamp if named else 0,
        status=STATUS_OPEN,
        n_trainers=0,
        n_aggregators=committee_size if named else 0,
        final_model_hash=empty(bytes32),
        committee_size=committee_size,
        signup_end=0 if named else block.timestamp + signup_period,
        sealed=named,
        trainer_stake=trainer_stake,
        aggregator_stake=aggregator_stake,
        weight_cap=weight_cap,
        attempt=0,
        reopens=0,
        n_active_trainers=0,
        ended_at=0,
        n_volunteers=0,
    )
    self._counts[job_id] = MARK
    self.total_escrow += msg.value
    log JobCreated(
        job_id=job_id,
        owner=msg.sender,
        spec_hash=spec_hash,
        model_hash=model_hash,
        rounds=rounds,
        reward_per_round=reward_per_round,
    )
    if named:
        log CommitteeSealed(job_id=job_id, committee=committee)
    return job_id


@external
def join(job_id: uint256, role: uint256):
    """
    @notice Join an open job as a trainer (role 1) or an aggregator (role 2), locking the
            job's stake for that role in the Registry.
    @dev The caller must be active in the registry, declare that role there and have the
         free stake to lock. A trainer may join while the job is open, up to max_trainers
         active trainers and MAX_TRAINERS ever; its index (join order) indexes the
         `included` bitmap. An aggregator of a named committee must be listed in it and
         joins once; `Joined.index` is then its committee slot. For an open committee the
         caller volunteers, before the signup ends and the committee is sealed, up to
         MAX_VOLUNTEERS; `Joined.index` is then its volunteer slot.
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
        counts: uint256 = self._counts[job_id]
        index = (counts >> TRAINERS_SHIFT) & M64
        active: uint256 = (counts >> ACTIVE_SHIFT) & M64
        assert active < self.jobs[job_id].max_trainers, "jobs: job already has max_trainers active trainers"
        assert index < MAX_TRAINERS, "jobs: job already had 256 trainers"
        self.trainer_at[job_id][index] = msg.sender
        self.trainer_index[job_id][msg.sender] = index + 1
        self._commit_word[job_id][index] = MARK | (self.jobs[job_id].current_round << JOINED_SHIFT)
        self._counts[job_id] = counts + (1 << TRAINERS_SHIFT) + (1 << ACTIVE_SHIFT)
        self.jobs[job_id].n_trainers = index + 1
        self.jobs[job_id].n_active_trainers = active + 1
        self._lock(msg.sender, job_id, self.jobs[job_id].trainer_stake)
    else:
        word: uint256 = self._aggregator_word[job_id][msg.sender]
        if self.jobs[job_id].signup_end == 0:
            assert word & INDEX_MASK != 0, "jobs: caller is not in the job's named committee"
            assert word & MEMBER == 0, "jobs: caller is already an aggregator of the job"
            index = (word & INDEX_MASK) - 1
            self._aggregator_word[job_id][msg.sender] = word | MEMBER
        else:
            assert not self.jobs[job_id].sealed, "jobs: the committee is already sealed"
            assert block.timestamp <= self.jobs[job_id].signup_end, "jobs: signup is over"
            assert word & VOLUNTEER == 0, "jobs: caller already volunteered for the job"
            index = self.jobs[job_id].n_volunteers
            assert index < MAX_VOLUNTEERS, "jobs: job already has 64 volunteers"
            self.volunteer_at[job_id][index] = msg.sender
            self.jobs[job_id].n_volunteers = index + 1
            self._aggregator_word[job_id][msg.sender] = word | VOLUNTEER
        self._vote_key[job_id][msg.sender] = NO_VOTE
        self._lock(msg.sender, job_id, self.jobs[job_id].aggregator_stake)
    log Joined(job_id=job_id, node=msg.sender, role=role, index=index)


@external
def seal(job_id: uint256):
    """
    @notice Draw an open job's committee from its volunteers and start round 0.
    @dev Anyone may call it once the signup is over, if at least committee_size
         volunteers signed up. Draws committee_size distinct volunteers, each with a
         chance proportional to its Registry stake (plus one wei, so the draw never
         divides by zero), from the seed keccak256(abi_encode(block.prevrandao, job_id)),
         re-hashed for every draw. The unselected volunteers' aggregator locks are
         released (a volunteer that is also a trainer of the job keeps its trainer lock).
         Known limit: prevrandao can be biased by the block proposer, and whoever calls
         `seal` chooses the block; a VRF or a commit-reveal seed is the later fix. The
         stake weighting and the strict-majority quorum bound what a biased draw gains.
    @param job_id The job.
    """
    assert self.jobs[job_id].status == STATUS_OPEN, "jobs: job is not open"
    signup_end: uint256 = self.jobs[job_id].signup_end
    assert signup_end != 0, "jobs: the job has a named committee"
    assert not self.jobs[job_id].sealed, "jobs: the committee is already sealed"
    assert block.timestamp > signup_end, "jobs: signup is not over"
    n_volunteers: uint256 = self.jobs[job_id].n_volunteers
    size: uint256 = self.jobs[job_id].committee_size
    assert n_volunteers >= size, "jobs: too few volunteers"

    weights: DynArray[uint256, MAX_VOLUNTEERS] = []
    total: uint256 = 0
    for i: uint256 in range(n_volunteers, bound=MAX_VOLUNTEERS):
        weight: uint256 = staticcall self.registry.stake_of(self.volunteer_at[job_id][i]) + 1
        weights.append(weight)
        total += weight
    seed: bytes32 = keccak256(abi_encode(block.prevrandao, job_id))
    committee: DynArray[address, MAX_COMMITTEE] = []
    for k: uint256 in range(size, bound=MAX_COMMITTEE):
        seed = keccak256(seed)
        point: uint256 = convert(seed, uint256) % total
        chosen: uint256 = 0
        for i: uint256 in range(n_volunteers, bound=MAX_VOLUNTEERS):
            if point < weights[i]:
                chosen = i
                break
            point -= weights[i]
        total -= weights[chosen]
        weights[chosen] = 0
        member: address = self.volunteer_at[job_id][chosen]
        self.aggregator_at[job_id][k] = member
        self._aggregator_word[job_id][member] |= (k + 1) | MEMBER
        committee.append(member)

    if self.jobs[job_id].aggregator_stake > 0:
        trainer_stake: uint256 = self.jobs[job_id].trainer_stake
        for i: uint256 in range(n_volunteers, bound=MAX_VOLUNTEERS):
            if weights[i] == 0:
                continue
            volunteer: address = self.volunteer_at[job_id][i]
            released: uint256 = extcall self.registry.unlock(volunteer, job_id)
            if trainer_stake > 0 and self.trainer_index[job_id][volunteer] != 0:
                extcall self.registry.lock(volunteer, job_id, trainer_stake)
                released -= trainer_stake
            log StakeReleased(job_id=job_id, node=volunteer, amount=released)

    self.jobs[job_id].sealed = True
    self.jobs[job_id].n_aggregators = size
    self.jobs[job_id].round_start = block.timestamp
    log CommitteeSealed(job_id=job_id, committee=committee)


@external
def commit_update(job_id: uint256, round: uint256, update_hash: bytes32, weight: uint256):
    """
    @notice Commit the hash of the caller's update for the current round.
    @dev Once per active trainer per round, in a sealed job, before the round's deadline
         (inclusive). With weight_cap 0 every weight must be 1; otherwise 1 to weight_cap.
         Commits stay valid when the round is reopened.
    @param job_id The job.
    @param round The job's current round.
    @param update_hash SHA-256 of the update blob.
    @param weight The update's aggregation weight (e.g. number of samples).
    """
    self._check_open_round(job_id, round)
    assert self.jobs[job_id].sealed, "jobs: the committee is not sealed yet"
    deadline: uint256 = self.jobs[job_id].round_start + self.jobs[job_id].round_deadline
    assert block.timestamp <= deadline, "jobs: round deadline has passed"
    position: uint256 = self.trainer_index[job_id][msg.sender]
    assert position != 0, "jobs: caller is not a trainer of the job"
    assert update_hash != empty(bytes32), "jobs: update hash is empty"
    cap: uint256 = self.jobs[job_id].weight_cap
    if cap == 0:
        assert weight == 1, "jobs: this job takes equal weights; weight must be 1"
    else:
        assert weight > 0 and weight <= cap, "jobs: weight must be between 1 and the job's weight cap"
    index: uint256 = position - 1
    word: uint256 = self._commit_word[job_id][index]
    assert word & EVICTED == 0, "jobs: caller was evicted from the job"
    assert self._tag(word) != round + 1, "jobs: already committed this round"
    self._commit_word[job_id][index] = MARK | ((round + 1) << 128) | weight
    self._commit_hash[job_id][index] = update_hash
    self._counts[job_id] += 1
    log UpdateCommitted(job_id=job_id, round=round, trainer=msg.sender, update_hash=update_hash, weight=weight)


@external
def propose(job_id: uint256, round: uint256, model_hash: bytes32, included: uint256):
    """
    @notice Vote for the current round's result: the aggregated model and the trainers in it.
            The vote that brings the pair to `quorum` votes in this attempt also finalizes the round.
    @dev One vote per committee member in good standing (joined or drawn, not removed)
         per attempt: the attempt grows on every finalization and every reopen, so after
         a reopen the committee votes again. Accepted once every active trainer committed
         or the deadline passed; `included` must name joined trainers, at least
         min_trainers. The quorum-reaching vote emits `Proposed`, then runs `_finalize`
         (its events follow), and reverts as a whole when an included trainer did not
         commit this round. After it, the round is over: a later vote for it reverts
         with "jobs: wrong round".
    @param job_id The job.
    @param round The job's current round.
    @param model_hash SHA-256 of the aggregated model blob.
    @param included Bitmap of the aggregated trainers (bit i = trainer index i).
    """
    self._check_open_round(job_id, round)
    word: uint256 = self._aggregator_word[job_id][msg.sender]
    assert word & (MEMBER | REMOVED) == MEMBER, "jobs: caller is not an aggregator of the job in good standing"
    attempt: uint256 = self.jobs[job_id].attempt
    assert (word >> VOTE_ATTEMPT_SHIFT) & M32 != attempt + 1, "jobs: already voted in this attempt"
    self._check_pair(job_id, model_hash, included)
    included_hash: uint256 = convert(keccak256(abi_encode(included)), uint256) >> 128
    key: bytes32 = keccak256(abi_encode(model_hash, included))
    self._aggregator_word[job_id][msg.sender] = (
        ((round + 1) << VOTE_ROUND_SHIFT) | ((attempt + 1) << VOTE_ATTEMPT_SHIFT)
        | (included_hash << INCLUDED_SHIFT) | (word & M64)
    )
    self._vote_key[job_id][msg.sender] = key
    votes: uint256 = self.votes[job_id][attempt][key] + 1
    self.votes[job_id][attempt][key] = votes
    log Proposed(job_id=job_id, round=round, aggregator=msg.sender, model_hash=model_hash, included=included)
    if votes == self.jobs[job_id].quorum:
        self._finalize(job_id, round, attempt, model_hash, included, key, included_hash)


@internal
def _finalize(
    job_id: uint256,
    round: uint256,
    attempt: uint256,
    model_hash: bytes32,
    included: uint256,
    key: bytes32,
    included_hash: uint256,
):
    """
    @dev Finalize the current round with the pair that just reached the quorum; only
         `propose` calls it, after its own checks of the round and the pair. Records the
         result, credits the round's reward (aggregator share split equally among the
         committee members that voted for the pair in this attempt, the rest pro rata to
         weight among included trainers; rounding dust stays in escrow), starts the next
         round (or finishes the job), then slashes every member that voted in this attempt
         for the same included set with another model hash, and removes from the job each
         one the slash took stake from. A vote for another included set is neither paid
         nor slashed. Slashing never reverts.
    @param job_id The job.
    @param round The job's current round.
    @param attempt The job's current attempt.
    @param model_hash The aggregated model's hash, as voted.
    @param included The included-trainers bitmap, as voted.
    @param key keccak256(abi_encode(model_hash, included)), the pair's vote key.
    @param included_hash High 128 bits of keccak256(abi_encode(included)).
    """
    tag: uint256 = round + 1
    counts: uint256 = self._counts[job_id]
    n_trainers: uint256 = (counts >> TRAINERS_SHIFT) & M64
    total_weight: uint256 = 0
    for i: uint256 in range(n_trainers, bound=MAX_TRAINERS):
        if (included >> i) & 1 == 1:
            word: uint256 = self._commit_word[job_id][i]
            assert self._tag(word) == tag, "jobs: an included trainer did not commit this round"
            total_weight += word & M64
    self._results[job_id][round] = RoundResult(model_hash=model_hash, included=included, total_weight=total_weight)

    vote_tag: uint256 = attempt + 1
    agreeing: DynArray[address, MAX_COMMITTEE] = []
    wrong: DynArray[address, MAX_COMMITTEE] = []
    n_aggregators: uint256 = self.jobs[job_id].n_aggregators
    for i: uint256 in range(n_aggregators, bound=MAX_COMMITTEE):
        aggregator: address = self.aggregator_at[job_id][i]
        word: uint256 = self._aggregator_word[job_id][aggregator]
        if (word >> VOTE_ATTEMPT_SHIFT) & M32 != vote_tag:
            continue
        if self._vote_key[job_id][aggregator] == key:
            agreeing.append(aggregator)
        elif (word >> INCLUDED_SHIFT) & M128 == included_hash:
            wrong.append(aggregator)

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
            amount: uint256 = trainer_pool * (self._commit_word[job_id][i] & M64) // total_weight
            if amount > 0:
                self._credit(job_id, round, self.trainer_at[job_id][i], amount)
                paid += amount
    self.jobs[job_id].escrow -= paid
    self.total_escrow -= paid
    self.total_owed += paid

    self.jobs[job_id].model_hash = model_hash
    self.jobs[job_id].current_round = tag
    self.jobs[job_id].round_start = block.timestamp
    self.jobs[job_id].attempt = vote_tag
    self.jobs[job_id].reopens = 0
    self._counts[job_id] = counts & ~M64
    log RoundFinalized(job_id=job_id, round=round, model_hash=model_hash, included=included, total_weight=total_weight)
    if tag == self.jobs[job_id].rounds:
        self.jobs[job_id].status = STATUS_FINISHED
        self.jobs[job_id].final_model_hash = model_hash
        self.jobs[job_id].ended_at = block.timestamp
        log JobFinished(job_id=job_id, final_model_hash=model_hash)

    slash_amount: uint256 = self.slash_amount
    if slash_amount == 0:
        return
    owner: address = self.jobs[job_id].owner
    for aggregator: address in wrong:
        taken: uint256 = self._try_slash(aggregator, job_id, slash_amount, owner)
        log AggregatorSlashed(job_id=job_id, round=round, aggregator=aggregator, amount=taken)
        if taken > 0:
            self._aggregator_word[job_id][aggregator] |= REMOVED
            log AggregatorRemoved(job_id=job_id, round=round, aggregator=aggregator)


@external
def reopen(job_id: uint256):
    """
    @notice Give the current round a new commit and vote window after its deadline
            passed without a result.
    @dev Anyone may call it, up to MAX_REOPENS times per round (the count resets when a
         round finalizes). Starts a new attempt: the round's commits stay valid, the
         committee votes again. Revives a round that died for lack of commits or votes.
    @param job_id The job.
    """
    assert self.jobs[job_id].status == STATUS_OPEN, "jobs: job is not open"
    assert self.jobs[job_id].sealed, "jobs: the committee is not sealed yet"
    deadline: uint256 = self.jobs[job_id].round_start + self.jobs[job_id].round_deadline
    assert block.timestamp > deadline, "jobs: round deadline has not passed"
    reopens: uint256 = self.jobs[job_id].reopens
    assert reopens < MAX_REOPENS, "jobs: round was already reopened 3 times"
    self.jobs[job_id].round_start = block.timestamp
    self.jobs[job_id].attempt += 1
    self.jobs[job_id].reopens = reopens + 1
    log RoundReopened(job_id=job_id, round=self.jobs[job_id].current_round, reopens=reopens + 1)


@external
def evict(job_id: uint256, trainer_index: uint256):
    """
    @notice Evict a trainer that missed MISSED_ROUNDS_ALLOWED finalized rounds in a row,
            so later rounds stop waiting for its commit.
    @dev Anyone may call it. Counts the finalized rounds since the trainer's last commit
         (or since the round it joined in, before its first). Slashes its trainer lock
         (up to trainer_stake) to the job owner; never reverts for the slash.
    @param job_id The job.
    @param trainer_index The trainer's index (trainer_index(job_id, addr) - 1).
    """
    assert self.jobs[job_id].status == STATUS_OPEN, "jobs: job is not open"
    counts: uint256 = self._counts[job_id]
    assert trainer_index < (counts >> TRAINERS_SHIFT) & M64, "jobs: no trainer has that index"
    word: uint256 = self._commit_word[job_id][trainer_index]
    assert word & EVICTED == 0, "jobs: trainer is already evicted"
    since: uint256 = self._tag(word)
    if since == 0:
        since = (word >> JOINED_SHIFT) & M63
    assert self.jobs[job_id].current_round >= since + MISSED_ROUNDS_ALLOWED, "jobs: trainer has not missed 3 finalized rounds in a row"
    self._commit_word[job_id][trainer_index] = word | EVICTED
    self._counts[job_id] = counts - (1 << ACTIVE_SHIFT)
    self.jobs[job_id].n_active_trainers -= 1
    trainer: address = self.trainer_at[job_id][trainer_index]
    slashed: uint256 = 0
    trainer_stake: uint256 = self.jobs[job_id].trainer_stake
    if trainer_stake > 0:
        slashed = self._try_slash(trainer, job_id, trainer_stake, self.jobs[job_id].owner)
    log TrainerEvicted(job_id=job_id, trainer=trainer, index=trainer_index, slashed=slashed)


@external
def cancel(job_id: uint256):
    """
    @notice Cancel a job that can no longer finalize a round.
    @dev Only the owner, and only when (a) an open committee's signup is over and too few
         volunteers signed up to seal it, or (b) the current round's deadline passed after
         MAX_REOPENS reopens without a result. A round in its first deadlines cannot be
         cancelled, so the owner cannot front-run a round that is about to finalize.
    @param job_id The job; the caller must be its owner.
    """
    assert msg.sender == self.jobs[job_id].owner, "jobs: caller is not the job owner"
    assert self.jobs[job_id].status == STATUS_OPEN, "jobs: job is not open"
    if not self.jobs[job_id].sealed:
        assert block.timestamp > self.jobs[job_id].signup_end, "jobs: signup is not over"
        assert self.jobs[job_id].n_volunteers < self.jobs[job_id].committee_size, "jobs: enough volunteers signed up; seal the committee"
    else:
        deadline: uint256 = self.jobs[job_id].round_start + self.jobs[job_id].round_deadline
        assert block.timestamp > deadline, "jobs: round deadline has not passed"
        assert self.jobs[job_id].reopens == MAX_REOPENS, "jobs: the round can still be reopened"
    self.jobs[job_id].status = STATUS_CANCELLED
    self.jobs[job_id].ended_at = block.timestamp
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
def release(job_id: uint256):
    """
    @notice Release the caller's stake lock for a job, challenge_window seconds after
            the job finished or was cancelled.
    @dev For trainers, committee members and volunteers of the job, once each; releases
         the whole lock the caller holds for the job (its trainer and aggregator locks).
    @param job_id The job.
    """
    status: uint256 = self.jobs[job_id].status
    assert status == STATUS_FINISHED or status == STATUS_CANCELLED, "jobs: job has not ended"
    assert block.timestamp >= self.jobs[job_id].ended_at + self.challenge_window, "jobs: the challenge window has not passed"
    is_trainer: bool = self.trainer_index[job_id][msg.sender] != 0
    assert is_trainer or self._aggregator_word[job_id][msg.sender] & (MEMBER | VOLUNTEER) != 0, "jobs: caller holds no stake in the job"
    assert not self._released[job_id][msg.sender], "jobs: stake already released"
    self._released[job_id][msg.sender] = True
    amount: uint256 = extcall self.registry.unlock(msg.sender, job_id)
    log StakeReleased(job_id=job_id, node=msg.sender, amount=amount)


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
    @notice Whether an account is a committee member of a job in good standing: joined
            (named committee) or drawn (open committee), and not removed for a wrong vote.
    @param job_id The job.
    @param account The account.
    @return True when its votes count.
    """
    return self._aggregator_word[job_id][account] & (MEMBER | REMOVED) == MEMBER


@view
@external
def is_volunteer(job_id: uint256, account: address) -> bool:
    """
    @notice Whether an account volunteered for a job's open committee.
    @param job_id The job.
    @param account The account.
    @return True for a volunteer (drawn or not).
    """
    return self._aggregator_word[job_id][account] & VOLUNTEER != 0


@view
@external
def voted_in_attempt(job_id: uint256, aggregator: address) -> bool:
    """
    @notice Whether an aggregator voted in the job's current attempt (after a reopen the
            committee votes again, so an earlier vote of the same round does not count).
    @param job_id The job.
    @param aggregator The aggregator.
    @return True when its vote for the current attempt is on chain.
    """
    word: uint256 = self._aggregator_word[job_id][aggregator]
    return (word >> VOTE_ATTEMPT_SHIFT) & M32 == self.jobs[job_id].attempt + 1


@view
@external
def is_trainer_active(job_id: uint256, account: address) -> bool:
    """
    @notice Whether an account is a trainer of a job that was not evicted.
    @param job_id The job.
    @param account The account.
    @return True for an active trainer.
    """
    position: uint256 = self.trainer_index[job_id][account]
    if position == 0:
        return False
    return self._commit_word[job_id][position - 1] & EVICTED == 0


@view
@external
def deadline(job_id: uint256) -> uint256:
    """
    @notice The current round's deadline: commits are accepted up to and including it.
    @dev For an open committee before `seal` this is just round_deadline (round 0 has not started).
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
    return self._commit_hash[job_id][position - 1], word & M64


@view
@external
def vote_of(job_id: uint256, round: uint256, aggregator: address) -> bytes32:
    """
    @notice The key of an aggregator's latest vote in a round (in any attempt of it).
    @dev Only the aggregator's most recent vote is stored: for an earlier round this
         returns empty. Every vote is in the `Proposed` events.
    @param job_id The job.
    @param round The round.
    @param aggregator The aggregator.
    @return keccak256(abi_encode(model_hash, included)), or empty when it did not vote.
    """
    word: uint256 = self._aggregator_word[job_id][aggregator]
    if (word >> VOTE_ROUND_SHIFT) & M31 != round + 1:
        return empty(bytes32)
    return self._vote_key[job_id][aggregator]


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
