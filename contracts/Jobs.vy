# pragma version 0.4.3
# pragma optimize codesize
# pragma experimental-codegen
"""
@title Allmende training jobs
@notice Escrow, committees, rounds, a commit-reveal aggregator vote, stake locks and
        claimable pull payments for training jobs, built to be safe among strangers.
        An owner escrows the reward for every round and picks a committee of aggregators:
        a named one (the owner lists its members; it is sealed at creation) or an open one
        (staked volunteers sign up for `signup_period` seconds, then anyone calls `seal`,
        which draws `committee_size` of them weighted by stake, and a strict majority of
        the committee is the quorum). Trainers and aggregators lock a bond
        (`trainer_stake`, `aggregator_stake`) in the Registry when they join; it stays
        locked until `challenge_window` seconds after the job ended, then `release` frees it.
        Trainers commit the hash of their update (weight 1, or up to the job's
        `weight_cap`). Committee members vote in two steps: `commit_vote` binds a member to
        keccak256(abi_encode(model_hash, included, total_weight, salt, member)) without
        showing it; `reveal` opens it once every member committed or the vote-commit period
        (one `round_deadline` from the attempt's first vote commit) passed, when no vote can
        be committed any more, so nobody can copy a revealed vote. The reveal that brings a
        (model hash, included, total weight) result to `quorum` finalizes the round: it
        checks that every included trainer committed this round (a few bitmap words) and
        records the result; nothing is paid then. Each included trainer (`claim`) and each
        member that revealed the result in the finalizing attempt (`claim_vote`) later
        claims its share; `challenge` slashes a member whose revealed vote named the
        finalized included set with another model hash (aggregation is deterministic, so
        that vote is provably wrong); a vote over another included set is neither paid nor
        slashed. What nobody claims by `challenge_window` after the job ended goes back to
        the owner with `refund`. A round whose attempt is over (deadline passed, and the
        vote of the attempt, if one started, had two vote periods) can be reopened (up to
        MAX_REOPENS times); only then may the owner cancel. A trainer that misses
        MISSED_ROUNDS_ALLOWED finalized rounds in a row can be evicted by anyone.
@dev    Invariant: self.balance == total_escrow + total_owed.
        A job that ended keeps the time it ended in `round_start` (the finalization of its
        last round, or the cancel) and its final model in `model_hash`; see `ended_at`
        and `final_model_hash`. A job's escrow holds the
        reward of its rounds not finalized yet, plus the unclaimed shares of its finalized
        ones (`reserved(job_id)`); a claim moves a share from escrow to `owed`.
        Gas: `commit_update`, `commit_vote`, a `reveal` below the quorum and the finalizing
        `reveal` touch a fixed handful of slots (at most 8 bitmap words for 1,024
        trainers) and make no external call. Per-trainer and per-aggregator slots are
        reused across rounds and tagged with `round + 1` / `attempt + 1`, and they are
        written nonzero already by `join` (or `create_job`), so no commit or vote pays for a
        fresh slot except the first reveal for a result in an attempt, and the finalizing
        reveal for the round's result word. A trainer's commit word keeps its last two
        rounds (one slot per round parity): a trainer claims round r before it commits in
        round r + 2, or that share stays with the owner.
        Jobs is the only contract that can slash the stake it locked, so it knows
        locally when it slashed someone: the good-standing checks are local.
"""

from interfaces import IRegistry

MAX_TRAINERS: constant(uint256) = 1024
WORDS: constant(uint256) = 4  # included-bitmap words of 256 trainers (MAX_TRAINERS // 256)
BLOCKS: constant(uint256) = 8  # committed-bitmap words of 128 trainers
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
M8: constant(uint256) = 2**8 - 1
M16: constant(uint256) = 2**16 - 1
M31: constant(uint256) = 2**31 - 1
M32: constant(uint256) = 2**32 - 1
M64: constant(uint256) = 2**64 - 1
M96: constant(uint256) = 2**96 - 1
M128: constant(uint256) = 2**128 - 1
TAG_MASK: constant(uint256) = 2**127 - 1

# Per-trainer commit word (job -> trainer index): bit 255 MARK (never zero again); bit 254
# EVICTED; bits 224 + p CLAIMED for slot p; bits 192..223 the round the trainer joined in
# (only read before its first commit); slot p (p = round % 2) in bits 96p..96p + 95: the
# round + 1 of the latest commit in a round of that parity (high 32 bits, 0: none) and its
# weight (low 64 bits).
EVICTED: constant(uint256) = 2**254
CLAIMED_SHIFT: constant(uint256) = 224
JOINED_SHIFT: constant(uint256) = 192
SLOT_BITS: constant(uint256) = 96

# Per-job counts word: MARK | n_trainers << 128 | n_active_trainers << 64 | commits this round.
TRAINERS_SHIFT: constant(uint256) = 128
ACTIVE_SHIFT: constant(uint256) = 64

# Per-job committed words (job -> block b): MARK | (round + 1) << 128 | bit i = trainer
# 128 * b + i committed in that round.
BLOCK_SIZE: constant(uint256) = 128

# Per-job params word, read by the hot paths (the Job struct keeps the same values for
# its view): weight_cap (bits 0..63), round_deadline (64..95), quorum (96..103), voters
# (104..111: committee seats not removed), min_trainers (112..127), SEALED (bit 255).
DEADLINE_SHIFT: constant(uint256) = 64
QUORUM_SHIFT: constant(uint256) = 96
VOTERS_SHIFT: constant(uint256) = 104
MIN_TRAINERS_SHIFT: constant(uint256) = 112
SEALED: constant(uint256) = 2**255

# Per-job vote phase word: MARK | (attempt + 1) << 128 | time of the attempt's first vote
# commit << 64 | vote commits in the attempt.
PHASE_TAG_SHIFT: constant(uint256) = 128
PHASE_TIME_SHIFT: constant(uint256) = 64

# Per-aggregator word (job -> address): bits 224..254 round + 1 and bits 192..223
# attempt + 1 of its latest reveal; bits 64..191 the high 128 bits of
# keccak256(abi_encode(included)) of that reveal; bits 32..63 attempt + 1 of its latest
# vote commit; bits 0..7 committee index + 1 (0: not in the committee); then the flags.
VOTE_ROUND_SHIFT: constant(uint256) = 224
VOTE_ATTEMPT_SHIFT: constant(uint256) = 192
INCLUDED_SHIFT: constant(uint256) = 64
COMMIT_SHIFT: constant(uint256) = 32
INDEX_MASK: constant(uint256) = 255
MEMBER: constant(uint256) = 256  # a committee member holding its aggregator lock
REMOVED: constant(uint256) = 512  # slashed for a provably wrong vote: no more votes
VOLUNTEER: constant(uint256) = 1024  # signed up for an open committee
SETTLED: constant(uint256) = 2048  # its latest reveal was claimed, slashed or followed by a commit
# Written into a new aggregator's vote slot so its first vote is not a fresh slot.
NO_VOTE: constant(bytes32) = keccak256("jobs: no vote yet")

# Per-round result word, in a ring of RESULT_RING slots per job (job -> round % RESULT_RING),
# written nonzero by `create_job`: round + 1 (bits 224..255), the high 112 bits of the
# result key (bits 112..223), the high 80 bits of keccak256(abi_encode(included)) (bits
# 32..111), attempt + 1 of the finalizing attempt (bits 0..31). A round's result can be
# claimed and challenged until RESULT_RING later rounds are final.
RESULT_RING: constant(uint256) = 8
RESULT_TAG_SHIFT: constant(uint256) = 224
RESULT_KEY_SHIFT: constant(uint256) = 112
RESULT_INCLUDED_SHIFT: constant(uint256) = 32
M80: constant(uint256) = 2**80 - 1
M112: constant(uint256) = 2**112 - 1

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
    committee_size: uint256
    signup_end: uint256
    sealed: bool
    trainer_stake: uint256
    aggregator_stake: uint256
    weight_cap: uint256
    attempt: uint256
    reopens: uint256
    n_active_trainers: uint256
    n_volunteers: uint256
    paid: uint256


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

event VoteCommitted:
    job_id: indexed(uint256)
    round: indexed(uint256)
    aggregator: indexed(address)
    attempt: uint256
    commitment: bytes32

event Proposed:
    job_id: indexed(uint256)
    round: indexed(uint256)
    aggregator: indexed(address)
    model_hash: bytes32
    included: uint256[WORDS]
    total_weight: uint256

event RoundFinalized:
    job_id: indexed(uint256)
    round: indexed(uint256)
    model_hash: bytes32
    included: uint256[WORDS]
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
# job -> attempt -> keccak256(abi_encode(model_hash, included, total_weight)) -> reveals
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
# job -> block -> committed word (see above)
_committed: HashMap[uint256, HashMap[uint256, uint256]]
# job -> params word (see above)
_params: HashMap[uint256, uint256]
# job -> vote phase word (see above)
_vote_phase: HashMap[uint256, uint256]
# job -> address -> aggregator word (see above)
_aggregator_word: HashMap[uint256, HashMap[address, uint256]]
# job -> aggregator -> its vote commitment (after commit_vote) or its result key (after reveal)
_vote_slot: HashMap[uint256, HashMap[address, bytes32]]
# job -> node -> whether it released its lock
_released: HashMap[uint256, HashMap[address, bool]]
# job -> round % RESULT_RING -> result word (see above)
_results: HashMap[uint256, HashMap[uint256, uint256]]
# job -> round -> wei claimed by trainers (declared-weight jobs only: caps a round's claims)
_trainer_paid: HashMap[uint256, HashMap[uint256, uint256]]


@deploy
def __init__(registry: IRegistry, aggregator_share_bps: uint256, slash_amount: uint256, challenge_window: uint256):
    """
    @notice Create the jobs contract bound to a node registry.
    @dev After deployment the registry's admin calls
         `registry.set_first_slasher(<this contract>)`; until then `join` with a nonzero
         stake reverts (the Registry refuses the lock). If the Registry later revokes this
         contract, `challenge` still succeeds: slashing then takes nothing.
    @param registry The Registry contract that holds nodes and stake.
    @param aggregator_share_bps Share of each round's reward for the agreeing aggregators, in basis points.
    @param slash_amount Locked stake (wei) slashed from an aggregator that voted a wrong model hash.
    @param challenge_window Seconds after a job ended before its participants can release
           their locks; claims close then, and the owner's refund takes what is unclaimed.
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
    @dev The round tag (round + 1) of a committed-bitmap word.
    """
    return (word >> 128) & TAG_MASK


@internal
@pure
def _slot_tag(word: uint256, parity: uint256) -> uint256:
    """
    @dev The round + 1 of a trainer's latest commit in a round of `parity` (0: none).
    """
    return (word >> (SLOT_BITS * parity + 64)) & M32


@internal
@pure
def _latest_tag(word: uint256) -> uint256:
    """
    @dev The round + 1 of a trainer's latest commit (0: none yet).
    """
    return max(self._slot_tag(word, 0), self._slot_tag(word, 1))


@internal
@pure
def _result_key(model_hash: bytes32, included: uint256[WORDS], total_weight: uint256) -> bytes32:
    """
    @dev The key of a round result: keccak256(abi_encode(model_hash, included, total_weight)).
    """
    return keccak256(abi_encode(model_hash, included, total_weight))


@internal
@view
def _result(job_id: uint256, round: uint256) -> uint256:
    """
    @dev The result word of a finalized round still in the ring; 0 otherwise.
    """
    result: uint256 = self._results[job_id][round % RESULT_RING]
    if result >> RESULT_TAG_SHIFT != round + 1:
        return 0
    return result


@internal
@pure
def _key_prefix(key: bytes32) -> uint256:
    """
    @dev The high 112 bits of a result key, as a result word keeps them.
    """
    return convert(key, uint256) >> 144


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
def _check_ready(job_id: uint256, params: uint256):
    """
    @dev Reverts unless votes may start: every active trainer committed, or the deadline passed.
    """
    counts: uint256 = self._counts[job_id]
    if counts & M64 < (counts >> ACTIVE_SHIFT) & M64:
        deadline: uint256 = self.jobs[job_id].round_start + ((params >> DEADLINE_SHIFT) & M32)
        assert block.timestamp > deadline, "jobs: a trainer has not committed and the deadline has not passed"


@internal
@view
def _check_result(job_id: uint256, params: uint256, model_hash: bytes32, included: uint256[WORDS], total_weight: uint256):
    """
    @dev The checks on a revealed result: a model hash; `included` in its shortest form
         (last word nonzero), naming only joined trainers, at least min_trainers of them;
         `total_weight` their number (equal weights) or between that and weight_cap times
         it (declared weights). That every included trainer committed in this round is
         checked by `_finalize`, when the result reaches the quorum.
    """
    assert model_hash != empty(bytes32), "jobs: model hash is empty"
    n_trainers: uint256 = (self._counts[job_id] >> TRAINERS_SHIFT) & M64
    for i: uint256 in range(WORDS):
        if n_trainers <= 256 * i:
            assert included[i] == 0, "jobs: included names a trainer index that has not joined"
        elif n_trainers < 256 * (i + 1):
            assert included[i] >> (n_trainers - 256 * i) == 0, "jobs: included names a trainer index that has not joined"
    count: uint256 = 0
    for word: uint256 in included:
        count += self._popcount(word)
    assert count >= (params >> MIN_TRAINERS_SHIFT) & M16, "jobs: included has fewer than min_trainers trainers"
    cap: uint256 = params & M64
    if cap == 0:
        assert total_weight == count, "jobs: total_weight must equal the included count"
    else:
        assert total_weight >= count and total_weight <= count * cap, "jobs: total_weight is out of range"


@internal
@view
def _attempt_over(job_id: uint256) -> bool:
    """
    @dev Whether the current attempt can no longer finalize on time: its deadline passed,
         and its vote, if one started, had its vote-commit period and one more
         round_deadline for the reveals.
    """
    period: uint256 = self.jobs[job_id].round_deadline
    if block.timestamp <= self.jobs[job_id].round_start + period:
        return False
    phase: uint256 = self._vote_phase[job_id]
    if (phase >> PHASE_TAG_SHIFT) & M64 != self.jobs[job_id].attempt + 1:
        return True
    return block.timestamp > ((phase >> PHASE_TIME_SHIFT) & M64) + 2 * period


@internal
@view
def _reveals_open(job_id: uint256, params: uint256) -> bool:
    """
    @dev Whether reveals are accepted in the current attempt: every voter committed a
         vote, or the vote-commit period (round_deadline from the first commit) passed.
    """
    phase: uint256 = self._vote_phase[job_id]
    if (phase >> PHASE_TAG_SHIFT) & M64 != self.jobs[job_id].attempt + 1:
        return False
    if phase & M32 >= (params >> VOTERS_SHIFT) & M8:
        return True
    return block.timestamp > ((phase >> PHASE_TIME_SHIFT) & M64) + ((params >> DEADLINE_SHIFT) & M32)


@internal
@view
def _provably_wrong(job_id: uint256, aggregator: address, word: uint256) -> bool:
    """
    @dev Whether an aggregator's latest reveal, not settled yet, was in the attempt that
         finalized its round, named the finalized included set and another model hash or
         total weight. (While SETTLED is clear, its vote slot holds that reveal's key.)
    """
    if word & SETTLED != 0:
        return False
    round_tag: uint256 = (word >> VOTE_ROUND_SHIFT) & M31
    if round_tag == 0:
        return False
    result: uint256 = self._result(job_id, round_tag - 1)
    if result == 0 or result & M32 != (word >> VOTE_ATTEMPT_SHIFT) & M32:
        return False
    if (result >> RESULT_INCLUDED_SHIFT) & M80 != ((word >> INCLUDED_SHIFT) & M128) >> 48:
        return False
    return self._key_prefix(self._vote_slot[job_id][aggregator]) != (result >> RESULT_KEY_SHIFT) & M112


@internal
def _pay(job_id: uint256, round: uint256, account: address, amount: uint256):
    """
    @dev Move a claimed share of a finalized round from the job's escrow to `account`'s credit.
    """
    self.jobs[job_id].escrow -= amount
    self.jobs[job_id].paid += amount
    self.total_escrow -= amount
    self.total_owed += amount
    self.owed[account] += amount
    log Credited(job_id=job_id, round=round, account=account, amount=amount)


@internal
@view
def _check_claims_open(job_id: uint256):
    """
    @dev Claims are accepted while the job runs and until challenge_window after it ended.
    """
    if self.jobs[job_id].status != STATUS_OPEN:
        assert block.timestamp < self.jobs[job_id].round_start + self.challenge_window, "jobs: the claim period is over"


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


@internal
def _slash_wrong(job_id: uint256, aggregator: address, word: uint256):
    """
    @dev Slash a provably wrong vote (the caller checked it): slash_amount, capped at the
         lock, to the owner; settle the vote; remove the member from later votes when the
         slash took stake. Never reverts for the slash.
    """
    self._aggregator_word[job_id][aggregator] = word | SETTLED
    round: uint256 = ((word >> VOTE_ROUND_SHIFT) & M31) - 1
    slash_amount: uint256 = self.slash_amount
    taken: uint256 = 0
    if slash_amount > 0:
        taken = self._try_slash(aggregator, job_id, slash_amount, self.jobs[job_id].owner)
    log AggregatorSlashed(job_id=job_id, round=round, aggregator=aggregator, amount=taken)
    if taken > 0 and word & (MEMBER | REMOVED) == MEMBER:
        self._aggregator_word[job_id][aggregator] = word | SETTLED | REMOVED
        self._params[job_id] -= 1 << VOTERS_SHIFT
        log AggregatorRemoved(job_id=job_id, round=round, aggregator=aggregator)


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
    @param max_trainers Most active trainers the job may have (at most MAX_TRAINERS, 1024).
    @param quorum Matching reveals needed to finalize a round: 1 to len(committee) for a
           named committee, a strict majority of committee_size for an open one.
    @param round_deadline Seconds each round (or reopened round) accepts commits, 1 to
           MAX_PERIOD; also the length of a vote-commit period and of the reveal period after it.
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
    assert max_trainers <= MAX_TRAINERS, "jobs: max_trainers exceeds 1024"
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
        committee_size=committee_size,
        signup_end=0 if named else block.timestamp + signup_period,
        sealed=named,
        trainer_stake=trainer_stake,
        aggregator_stake=aggregator_stake,
        weight_cap=weight_cap,
        attempt=0,
        reopens=0,
        n_active_trainers=0,
        n_volunteers=0,
        paid=0,
    )
    params: uint256 = weight_cap | (round_deadline << DEADLINE_SHIFT) | (quorum << QUORUM_SHIFT) | (min_trainers << MIN_TRAINERS_SHIFT)
    if named:
        params |= SEALED | (committee_size << VOTERS_SHIFT)
    self._params[job_id] = params
    self._vote_phase[job_id] = MARK
    for i: uint256 in range(RESULT_RING):
        self._results[job_id][i] = 1
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
         active trainers and MAX_TRAINERS ever; its index (join order) is its bit in the
         `included` bitmap words (word index // 256, bit index % 256). An aggregator of a named committee must be listed in it and
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
        assert index < MAX_TRAINERS, "jobs: job already had 1024 trainers"
        self.trainer_at[job_id][index] = msg.sender
        self.trainer_index[job_id][msg.sender] = index + 1
        self._commit_word[job_id][index] = MARK | (self.jobs[job_id].current_round << JOINED_SHIFT)
        if index % BLOCK_SIZE == 0:
            self._committed[job_id][index // BLOCK_SIZE] = MARK
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
        self._vote_slot[job_id][msg.sender] = NO_VOTE
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
    self._params[job_id] |= SEALED | (size << VOTERS_SHIFT)
    self.jobs[job_id].n_aggregators = size
    self.jobs[job_id].round_start = block.timestamp
    log CommitteeSealed(job_id=job_id, committee=committee)


@external
def commit_update(job_id: uint256, round: uint256, update_hash: bytes32, weight: uint256):
    """
    @notice Commit the hash of the caller's update for the current round.
    @dev Once per active trainer per round, in a sealed job, before the round's deadline
         (inclusive). With weight_cap 0 every weight must be 1; otherwise 1 to weight_cap.
         Commits stay valid when the round is reopened. Overwrites the trainer's commit of
         round - 2 (the slot of the same parity): a share of that round not claimed by now
         stays with the owner.
    @param job_id The job.
    @param round The job's current round.
    @param update_hash SHA-256 of the update blob.
    @param weight The update's aggregation weight (e.g. number of samples).
    """
    self._check_open_round(job_id, round)
    params: uint256 = self._params[job_id]
    assert params & SEALED != 0, "jobs: the committee is not sealed yet"
    deadline: uint256 = self.jobs[job_id].round_start + ((params >> DEADLINE_SHIFT) & M32)
    assert block.timestamp <= deadline, "jobs: round deadline has passed"
    position: uint256 = self.trainer_index[job_id][msg.sender]
    assert position != 0, "jobs: caller is not a trainer of the job"
    assert update_hash != empty(bytes32), "jobs: update hash is empty"
    cap: uint256 = params & M64
    if cap == 0:
        assert weight == 1, "jobs: this job takes equal weights; weight must be 1"
    else:
        assert weight > 0 and weight <= cap, "jobs: weight must be between 1 and the job's weight cap"
    index: uint256 = position - 1
    word: uint256 = self._commit_word[job_id][index]
    assert word & EVICTED == 0, "jobs: caller was evicted from the job"
    tag: uint256 = round + 1
    parity: uint256 = round % 2
    assert self._slot_tag(word, parity) != tag, "jobs: already committed this round"
    offset: uint256 = SLOT_BITS * parity
    word = word & ~((M96 << offset) | (1 << (CLAIMED_SHIFT + parity)))
    self._commit_word[job_id][index] = word | (((tag << 64) | weight) << offset)
    self._commit_hash[job_id][index] = update_hash
    self._counts[job_id] += 1
    committed: uint256 = self._committed[job_id][index // BLOCK_SIZE]
    if self._tag(committed) != tag:
        committed = MARK | (tag << 128)
    self._committed[job_id][index // BLOCK_SIZE] = committed | (1 << (index % BLOCK_SIZE))
    log UpdateCommitted(job_id=job_id, round=round, trainer=msg.sender, update_hash=update_hash, weight=weight)


@external
def commit_vote(job_id: uint256, round: uint256, commitment: bytes32):
    """
    @notice Commit to a vote for the current round's result without showing it:
            commitment = keccak256(abi_encode(model_hash, included, total_weight, salt, caller)).
    @dev One commit per committee member in good standing per attempt, once every active
         trainer committed or the deadline passed, and only during the attempt's
         vote-commit period: it starts with the attempt's first vote commit and ends after
         round_deadline seconds, or when every voter committed. Reveals are refused until
         it ends, so no vote can be committed after any vote was revealed. Refused while
         the caller's previous reveal is provably wrong and not yet challenged; a previous
         reveal that was paid but not claimed is forfeited to the owner.
    @param job_id The job.
    @param round The job's current round.
    @param commitment The hash above; the caller's address in it makes a copied commitment useless.
    """
    self._check_open_round(job_id, round)
    word: uint256 = self._aggregator_word[job_id][msg.sender]
    assert word & (MEMBER | REMOVED) == MEMBER, "jobs: caller is not an aggregator of the job in good standing"
    assert commitment != empty(bytes32), "jobs: commitment is empty"
    attempt: uint256 = self.jobs[job_id].attempt
    assert (word >> COMMIT_SHIFT) & M32 != attempt + 1, "jobs: already committed a vote in this attempt"
    params: uint256 = self._params[job_id]
    self._check_ready(job_id, params)
    assert not self._provably_wrong(job_id, msg.sender, word), "jobs: caller's last vote is provably wrong"
    phase: uint256 = self._vote_phase[job_id]
    if (phase >> PHASE_TAG_SHIFT) & M64 != attempt + 1:
        phase = MARK | ((attempt + 1) << PHASE_TAG_SHIFT) | (block.timestamp << PHASE_TIME_SHIFT)
    else:
        period_end: uint256 = ((phase >> PHASE_TIME_SHIFT) & M64) + ((params >> DEADLINE_SHIFT) & M32)
        assert block.timestamp <= period_end, "jobs: the vote-commit period is over"
    self._vote_phase[job_id] = phase + 1
    self._vote_slot[job_id][msg.sender] = commitment
    self._aggregator_word[job_id][msg.sender] = (word & ~(M32 << COMMIT_SHIFT)) | ((attempt + 1) << COMMIT_SHIFT) | SETTLED
    log VoteCommitted(job_id=job_id, round=round, aggregator=msg.sender, attempt=attempt, commitment=commitment)


@external
def reveal(
    job_id: uint256,
    round: uint256,
    model_hash: bytes32,
    included: uint256[WORDS],
    total_weight: uint256,
    salt: bytes32,
):
    """
    @notice Reveal the caller's committed vote for the current round's result. The reveal
            that brings the result to `quorum` reveals in this attempt finalizes the round.
    @dev Accepted once the attempt's vote-commit period is over (every voter committed,
         or round_deadline passed since the first commit), for a member in good standing
         that committed in this attempt and did not reveal yet, when the arguments hash to
         its commitment. `included` is the included-trainers bitmap in words of 256
         (shortest form); `total_weight` their weight sum as the aggregate used it. The
         quorum-reaching reveal emits `Proposed`, then runs `_finalize` (its events
         follow), and reverts as a whole when an included trainer did not commit this
         round. After it, the round is over: a later reveal for it reverts with
         "jobs: wrong round".
    @param job_id The job.
    @param round The job's current round.
    @param model_hash SHA-256 of the aggregated model blob.
    @param included Bitmap words of the aggregated trainers (bit i of word w = trainer 256w + i).
    @param total_weight Sum of the included trainers' weights (their number for equal weights).
    @param salt The secret the commitment was made with.
    """
    self._check_open_round(job_id, round)
    word: uint256 = self._aggregator_word[job_id][msg.sender]
    assert word & (MEMBER | REMOVED) == MEMBER, "jobs: caller is not an aggregator of the job in good standing"
    attempt: uint256 = self.jobs[job_id].attempt
    assert (word >> COMMIT_SHIFT) & M32 == attempt + 1, "jobs: caller committed no vote in this attempt"
    assert (word >> VOTE_ATTEMPT_SHIFT) & M32 != attempt + 1, "jobs: already revealed in this attempt"
    params: uint256 = self._params[job_id]
    assert self._reveals_open(job_id, params), "jobs: reveals are not open yet"
    commitment: bytes32 = keccak256(abi_encode(model_hash, included, total_weight, salt, msg.sender))
    assert commitment == self._vote_slot[job_id][msg.sender], "jobs: the reveal does not match the caller's commitment"
    self._check_result(job_id, params, model_hash, included, total_weight)
    included_hash: uint256 = convert(keccak256(abi_encode(included)), uint256) >> 128
    key: bytes32 = self._result_key(model_hash, included, total_weight)
    self._aggregator_word[job_id][msg.sender] = (
        ((round + 1) << VOTE_ROUND_SHIFT) | ((attempt + 1) << VOTE_ATTEMPT_SHIFT)
        | (included_hash << INCLUDED_SHIFT) | (word & M64 & ~SETTLED)
    )
    self._vote_slot[job_id][msg.sender] = key
    votes: uint256 = self.votes[job_id][attempt][key] + 1
    self.votes[job_id][attempt][key] = votes
    log Proposed(job_id=job_id, round=round, aggregator=msg.sender, model_hash=model_hash, included=included, total_weight=total_weight)
    if votes == (params >> QUORUM_SHIFT) & M8:
        self._finalize(job_id, round, attempt, model_hash, included, total_weight, key, included_hash)


@internal
def _finalize(
    job_id: uint256,
    round: uint256,
    attempt: uint256,
    model_hash: bytes32,
    included: uint256[WORDS],
    total_weight: uint256,
    key: bytes32,
    included_hash: uint256,
):
    """
    @dev Finalize the current round with the result that just reached the quorum; only
         `reveal` calls it, after its own checks. Checks each included trainer committed
         this round (one committed-bitmap word per 128 trainers), records the result word,
         starts the next round (or finishes the job). Pays nothing: the shares are claimed.
    @param job_id The job.
    @param round The job's current round.
    @param attempt The job's current attempt.
    @param model_hash The aggregated model's hash, as revealed.
    @param included The included-trainers bitmap words, as revealed.
    @param total_weight The included trainers' total weight, as revealed.
    @param key The result key, keccak256(abi_encode(model_hash, included, total_weight)).
    @param included_hash High 128 bits of keccak256(abi_encode(included)).
    """
    tag: uint256 = round + 1
    for i: uint256 in range(WORDS):
        for half: uint256 in range(2):
            bits: uint256 = (included[i] >> (BLOCK_SIZE * half)) & M128
            if bits != 0:
                committed: uint256 = self._committed[job_id][2 * i + half]
                assert self._tag(committed) == tag and bits & ~committed == 0, "jobs: an included trainer did not commit this round"
    self._results[job_id][round % RESULT_RING] = (tag << RESULT_TAG_SHIFT) | (self._key_prefix(key) << RESULT_KEY_SHIFT) | ((included_hash >> 48) << RESULT_INCLUDED_SHIFT) | (attempt + 1)
    self.jobs[job_id].model_hash = model_hash
    self.jobs[job_id].current_round = tag
    self.jobs[job_id].round_start = block.timestamp
    self.jobs[job_id].attempt = attempt + 1
    if self.jobs[job_id].reopens != 0:
        self.jobs[job_id].reopens = 0
    self._counts[job_id] &= ~M64
    log RoundFinalized(job_id=job_id, round=round, model_hash=model_hash, included=included, total_weight=total_weight)
    if tag == self.jobs[job_id].rounds:
        self.jobs[job_id].status = STATUS_FINISHED
        log JobFinished(job_id=job_id, final_model_hash=model_hash)


@external
def claim(job_id: uint256, round: uint256, model_hash: bytes32, included: uint256[WORDS], total_weight: uint256):
    """
    @notice Claim the caller's trainer share of a finalized round: trainer_pool * weight
            // total_weight, where trainer_pool is the round's reward less the aggregator
            share. It is credited to `owed`; `withdraw` pays it.
    @dev The caller re-supplies the round's result (from `RoundFinalized`); it must hash to
         the recorded result, and name the caller. The weight is the caller's commit of
         that round, so a trainer claims round r before it commits in round r + 2. Claims
         close challenge_window after the job ended. A share that cannot be claimed stays
         in escrow and goes to the owner's refund after that. In a declared-weight job a
         round's trainer claims never exceed its trainer pool.
    @param job_id The job.
    @param round A finalized round.
    @param model_hash The round's model hash, as finalized.
    @param included The round's included-trainers bitmap words, as finalized.
    @param total_weight The round's total weight, as finalized.
    """
    self._check_claims_open(job_id)
    result: uint256 = self._result(job_id, round)
    assert result != 0, "jobs: round is not final or too old"
    key: bytes32 = self._result_key(model_hash, included, total_weight)
    assert self._key_prefix(key) == (result >> RESULT_KEY_SHIFT) & M112, "jobs: that is not the round's finalized result"
    position: uint256 = self.trainer_index[job_id][msg.sender]
    assert position != 0, "jobs: caller is not a trainer of the job"
    index: uint256 = position - 1
    assert (included[index // 256] >> (index % 256)) & 1 == 1, "jobs: caller was not included in that round"
    word: uint256 = self._commit_word[job_id][index]
    parity: uint256 = round % 2
    assert self._slot_tag(word, parity) == round + 1, "jobs: caller's commit of that round was overwritten"
    assert word & (1 << (CLAIMED_SHIFT + parity)) == 0, "jobs: already claimed"
    reward: uint256 = self.jobs[job_id].reward_per_round
    pool: uint256 = reward - reward * self.aggregator_share_bps // BPS
    weight: uint256 = (word >> (SLOT_BITS * parity)) & M64
    amount: uint256 = pool * weight // total_weight
    assert amount > 0, "jobs: the share is 0 wei"
    if self.jobs[job_id].weight_cap != 0:
        paid: uint256 = self._trainer_paid[job_id][round] + amount
        assert paid <= pool, "jobs: the round's trainer pool is used up"
        self._trainer_paid[job_id][round] = paid
    self._commit_word[job_id][index] = word | (1 << (CLAIMED_SHIFT + parity))
    self._pay(job_id, round, msg.sender, amount)


@external
def claim_vote(job_id: uint256, round: uint256):
    """
    @notice Claim the caller's aggregator share of a finalized round:
            reward * aggregator_share_bps // 10000 // quorum.
    @dev For a committee member whose latest reveal was for `round`, in the attempt that
         finalized it, and named its result; once. A member claims before its next
         `commit_vote` (which forfeits an unclaimed share to the owner). Claims close
         challenge_window after the job ended.
    @param job_id The job.
    @param round A finalized round.
    """
    self._check_claims_open(job_id)
    word: uint256 = self._aggregator_word[job_id][msg.sender]
    assert word & SETTLED == 0 and (word >> VOTE_ROUND_SHIFT) & M31 == round + 1, "jobs: caller has no unclaimed vote for that round"
    result: uint256 = self._result(job_id, round)
    assert result != 0, "jobs: round is not final or too old"
    assert result & M32 == (word >> VOTE_ATTEMPT_SHIFT) & M32, "jobs: caller's vote was not in the finalizing attempt"
    assert self._key_prefix(self._vote_slot[job_id][msg.sender]) == (result >> RESULT_KEY_SHIFT) & M112, "jobs: caller voted for another result"
    self._aggregator_word[job_id][msg.sender] = word | SETTLED
    reward: uint256 = self.jobs[job_id].reward_per_round
    amount: uint256 = reward * self.aggregator_share_bps // BPS // self.jobs[job_id].quorum
    assert amount > 0, "jobs: the share is 0 wei"
    self._pay(job_id, round, msg.sender, amount)


@external
def challenge(job_id: uint256, aggregator: address):
    """
    @notice Slash an aggregator whose latest reveal is provably wrong: it was in the
            attempt that finalized its round and named the same included set with another
            model hash or total weight (aggregation is deterministic).
    @dev Anyone may call it, until the aggregator releases its lock (`release` slashes an
         unchallenged wrong vote itself). Slashes slash_amount (capped at the lock) to the
         owner; a member the slash took stake from is removed from later votes. Never
         reverts for the slash.
    @param job_id The job.
    @param aggregator The aggregator.
    """
    word: uint256 = self._aggregator_word[job_id][aggregator]
    assert self._provably_wrong(job_id, aggregator, word), "jobs: that vote is not provably wrong"
    self._slash_wrong(job_id, aggregator, word)


@external
def reopen(job_id: uint256):
    """
    @notice Give the current round a new commit and vote window once its attempt is over
            without a result.
    @dev Anyone may call it, up to MAX_REOPENS times per round (the count resets when a
         round finalizes), once the deadline passed and, if a vote started, its commit
         period and one more round_deadline for reveals passed. Starts a new attempt: the
         round's commits stay valid, the committee votes again. Revives a round that died
         for lack of commits, vote commits or reveals.
    @param job_id The job.
    """
    assert self.jobs[job_id].status == STATUS_OPEN, "jobs: job is not open"
    assert self.jobs[job_id].sealed, "jobs: the committee is not sealed yet"
    assert self._attempt_over(job_id), "jobs: the round's attempt is not over"
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
         (up to trainer_stake) to the job owner; never reverts for the slash. An evicted
         trainer can still claim the rounds it was included in.
    @param job_id The job.
    @param trainer_index The trainer's index (trainer_index(job_id, addr) - 1).
    """
    assert self.jobs[job_id].status == STATUS_OPEN, "jobs: job is not open"
    counts: uint256 = self._counts[job_id]
    assert trainer_index < (counts >> TRAINERS_SHIFT) & M64, "jobs: no trainer has that index"
    word: uint256 = self._commit_word[job_id][trainer_index]
    assert word & EVICTED == 0, "jobs: trainer is already evicted"
    since: uint256 = self._latest_tag(word)
    if since == 0:
        since = (word >> JOINED_SHIFT) & M32
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
         volunteers signed up to seal it, or (b) the current round's attempt is over (see
         `reopen`) after MAX_REOPENS reopens without a result. A round in its first
         attempts cannot be cancelled, so the owner cannot front-run a round that is about
         to finalize.
    @param job_id The job; the caller must be its owner.
    """
    assert msg.sender == self.jobs[job_id].owner, "jobs: caller is not the job owner"
    assert self.jobs[job_id].status == STATUS_OPEN, "jobs: job is not open"
    if not self.jobs[job_id].sealed:
        assert block.timestamp > self.jobs[job_id].signup_end, "jobs: signup is not over"
        assert self.jobs[job_id].n_volunteers < self.jobs[job_id].committee_size, "jobs: enough volunteers signed up; seal the committee"
    else:
        assert self._attempt_over(job_id), "jobs: the round's attempt is not over"
        assert self.jobs[job_id].reopens == MAX_REOPENS, "jobs: the round can still be reopened"
    self.jobs[job_id].status = STATUS_CANCELLED
    self.jobs[job_id].round_start = block.timestamp
    log JobCancelled(job_id=job_id, round=self.jobs[job_id].current_round)


@external
def refund(job_id: uint256):
    """
    @notice Credit the unspent escrow of a finished or cancelled job to its owner.
    @dev Before challenge_window passed since the job ended, that is the reward of the
         rounds never finalized; after it (claims are closed then), everything left,
         including the shares nobody claimed and rounding dust. The owner then pulls it
         with `withdraw`.
    @param job_id The job; the caller must be its owner.
    """
    owner: address = self.jobs[job_id].owner
    assert msg.sender == owner, "jobs: caller is not the job owner"
    status: uint256 = self.jobs[job_id].status
    assert status == STATUS_FINISHED or status == STATUS_CANCELLED, "jobs: job is still open"
    amount: uint256 = self.jobs[job_id].escrow
    if block.timestamp < self.jobs[job_id].round_start + self.challenge_window:
        amount -= self._reserved(job_id)
    assert amount > 0, "jobs: nothing to refund before the challenge window ends"
    self.jobs[job_id].escrow -= amount
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
         An aggregator whose latest reveal is provably wrong and was not challenged is
         slashed first.
    @param job_id The job.
    """
    status: uint256 = self.jobs[job_id].status
    assert status == STATUS_FINISHED or status == STATUS_CANCELLED, "jobs: job has not ended"
    assert block.timestamp >= self.jobs[job_id].round_start + self.challenge_window, "jobs: the challenge window has not passed"
    is_trainer: bool = self.trainer_index[job_id][msg.sender] != 0
    word: uint256 = self._aggregator_word[job_id][msg.sender]
    assert is_trainer or word & (MEMBER | VOLUNTEER) != 0, "jobs: caller holds no stake in the job"
    assert not self._released[job_id][msg.sender], "jobs: stake already released"
    self._released[job_id][msg.sender] = True
    if self._provably_wrong(job_id, msg.sender, word):
        self._slash_wrong(job_id, msg.sender, word)
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


@internal
@view
def _reserved(job_id: uint256) -> uint256:
    """
    @dev The unclaimed shares of the job's finalized rounds (and their rounding dust).
    """
    return self.jobs[job_id].reward_per_round * self.jobs[job_id].current_round - self.jobs[job_id].paid


@view
@external
def reserved(job_id: uint256) -> uint256:
    """
    @notice The escrow a job holds for claims: the unclaimed shares of its finalized
            rounds (with their rounding dust), which the owner's refund leaves until the
            challenge window after the job's end.
    @param job_id The job.
    @return Wei.
    """
    return self._reserved(job_id)


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
def vote_committed(job_id: uint256, aggregator: address) -> bool:
    """
    @notice Whether an aggregator committed a vote in the job's current attempt.
    @param job_id The job.
    @param aggregator The aggregator.
    @return True when its commitment for the current attempt is on chain.
    """
    word: uint256 = self._aggregator_word[job_id][aggregator]
    return (word >> COMMIT_SHIFT) & M32 == self.jobs[job_id].attempt + 1


@view
@external
def voted_in_attempt(job_id: uint256, aggregator: address) -> bool:
    """
    @notice Whether an aggregator revealed its vote in the job's current attempt (after a
            reopen the committee votes again, so an earlier vote of the same round does not count).
    @param job_id The job.
    @param aggregator The aggregator.
    @return True when its revealed vote for the current attempt is on chain.
    """
    word: uint256 = self._aggregator_word[job_id][aggregator]
    return (word >> VOTE_ATTEMPT_SHIFT) & M32 == self.jobs[job_id].attempt + 1


@view
@external
def reveals_open(job_id: uint256) -> bool:
    """
    @notice Whether the current attempt accepts reveals: a vote commit was made and every
            voter committed, or the vote-commit period passed.
    @param job_id The job.
    @return True when `reveal` can be called.
    """
    return self._reveals_open(job_id, self._params[job_id])


@view
@external
def vote_phase(job_id: uint256) -> (uint256, uint256):
    """
    @notice The current attempt's vote commits so far and the time of its first (0, 0 before any).
    @param job_id The job.
    @return (commits, first commit's unix time).
    """
    phase: uint256 = self._vote_phase[job_id]
    if (phase >> PHASE_TAG_SHIFT) & M64 != self.jobs[job_id].attempt + 1:
        return 0, 0
    return phase & M32, (phase >> PHASE_TIME_SHIFT) & M64


@view
@external
def voters(job_id: uint256) -> uint256:
    """
    @notice The committee seats whose members were not removed (whose commits reveals wait for).
    @param job_id The job.
    @return The count.
    """
    return (self._params[job_id] >> VOTERS_SHIFT) & M8


@view
@external
def provably_wrong(job_id: uint256, aggregator: address) -> bool:
    """
    @notice Whether `challenge(job_id, aggregator)` would slash: the aggregator's latest,
            unsettled reveal named a finalized round's included set with another result.
    @param job_id The job.
    @param aggregator The aggregator.
    @return True when it can be challenged.
    """
    return self._provably_wrong(job_id, aggregator, self._aggregator_word[job_id][aggregator])


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
    @dev Only the trainer's most recent commit's hash is stored (and the weights of its
         last two rounds): for a round in which it did not commit, or that it has
         committed in again since, this returns empty values. Every commit is in the
         `UpdateCommitted` events.
    @param job_id The job.
    @param round The round.
    @param trainer The trainer.
    @return The update hash and weight, or (empty, 0).
    """
    position: uint256 = self.trainer_index[job_id][trainer]
    if position == 0:
        return empty(bytes32), 0
    word: uint256 = self._commit_word[job_id][position - 1]
    if self._latest_tag(word) != round + 1:
        return empty(bytes32), 0
    return self._commit_hash[job_id][position - 1], (word >> (SLOT_BITS * (round % 2))) & M64


@view
@external
def vote_of(job_id: uint256, round: uint256, aggregator: address) -> bytes32:
    """
    @notice The result key of an aggregator's latest reveal in a round (in any attempt of it).
    @dev Only the aggregator's most recent reveal is stored, until its next vote commit:
         otherwise this returns empty. Every reveal is in the `Proposed` events.
    @param job_id The job.
    @param round The round.
    @param aggregator The aggregator.
    @return keccak256(abi_encode(model_hash, included, total_weight)), or empty.
    """
    word: uint256 = self._aggregator_word[job_id][aggregator]
    if (word >> VOTE_ROUND_SHIFT) & M31 != round + 1 or (word >> COMMIT_SHIFT) & M32 != (word >> VOTE_ATTEMPT_SHIFT) & M32:
        return empty(bytes32)
    return self._vote_slot[job_id][aggregator]


@view
@external
def round_result(job_id: uint256, round: uint256) -> (bytes14, uint256):
    """
    @notice The finalized result of a round, as recorded: the high 14 bytes of its key
            keccak256(abi_encode(model_hash, included, total_weight)) and the attempt
            that finalized it. The result itself is in the round's `RoundFinalized` event.
    @dev Kept for the last RESULT_RING (8) finalized rounds; empty for older ones.
    @param job_id The job.
    @param round The round.
    @return (key prefix, attempt), or (empty, 0) when not final or too old.
    """
    result: uint256 = self._result(job_id, round)
    if result == 0:
        return empty(bytes14), 0
    return convert(convert((result >> RESULT_KEY_SHIFT) & M112, uint112), bytes14), (result & M32) - 1


@view
@external
def ended_at(job_id: uint256) -> uint256:
    """
    @notice When a job finished or was cancelled (0 while it is open).
    @param job_id The job.
    @return Unix time; challenge_window after it, claims close and locks can be released.
    """
    if self.jobs[job_id].status == STATUS_OPEN:
        return 0
    return self.jobs[job_id].round_start


@view
@external
def final_model_hash(job_id: uint256) -> bytes32:
    """
    @notice The final model of a finished job (empty otherwise).
    @param job_id The job.
    @return The model hash its last round finalized.
    """
    if self.jobs[job_id].status != STATUS_FINISHED:
        return empty(bytes32)
    return self.jobs[job_id].model_hash
