# pragma version 0.4.3
"""
@title Allmende disputes
@notice Compute mode's court. A provider commits the Merkle root of its training trace
        for a (job, round) and locks `provider_bond` of its stake here for it. During
        `challenge_window` anyone may challenge one segment with `challenger_bond`;
        provider and challenger then bisect the segment down to one step (each move
        within `response_timeout`), and a committee of `committee_size` verifiers,
        drawn from the verifier pool, re-executes that one step and votes. The loser
        pays: the provider's locked stake (slashed through the Registry) or the
        challenger's bond. While a round has an open challenge, `is_held` is True, so
        payouts of that round can wait for the outcome.
@dev    ETH held by this contract is exactly the bonds of unresolved challenges plus
        what `owed` credits (pull payments). A provider is only ever slashed by a
        committee majority or by missing its own deadline; a challenge that gets no
        majority returns the bond and slashes nobody.
"""

from interfaces import IRegistry

ROLE_VERIFIER: constant(uint256) = 4
ROLE_PROVIDER: constant(uint256) = 8
MAX_DEPTH: constant(uint256) = 20  # at most 2**20 leaves (same bound as allmende.verify)
MAX_K: constant(uint256) = 2**20  # steps per segment
MAX_COMMITTEE: constant(uint256) = 15
MAX_POOL: constant(uint256) = 128
MAX_OPEN_PER_TRACE: constant(uint256) = 4
MAX_PERIOD: constant(uint256) = 30 * 86400
BPS: constant(uint256) = 10000

# challenge states
NO_CHALLENGE: constant(uint8) = 0
PROVIDER_TURN: constant(uint8) = 1  # the provider must post the hash at the midpoint
CHALLENGER_TURN: constant(uint8) = 2  # the challenger must agree or disagree with it
VOTING: constant(uint8) = 3  # one step is left; the committee votes
PROVIDER_LOST: constant(uint8) = 4
CHALLENGER_LOST: constant(uint8) = 5
UNDECIDED: constant(uint8) = 6  # no majority in time: the bond returns, nobody is slashed
ABANDONED: constant(uint8) = 7  # the trace was slashed by another challenge: the bond returns


struct Trace:
    root: bytes32
    manifest: bytes32
    segments: uint256
    k: uint256
    committed_at: uint256
    open_challenges: uint256
    released: bool
    slashed: bool


struct Challenge:
    job_id: uint256
    round: uint256
    provider: address
    challenger: address
    lo: uint256  # a step whose parameter hash both sides agree on
    hi: uint256  # a step whose parameter hash they dispute
    lo_hash: bytes32
    hi_hash: bytes32  # the provider's claim at `hi`
    mid_hash: bytes32  # the provider's claim at (lo + hi) // 2, once posted
    state: uint8
    deadline: uint256
    committee: DynArray[address, MAX_COMMITTEE]
    votes_provider: uint256
    votes_challenger: uint256


event TraceCommitted:
    job_id: indexed(uint256)
    round: indexed(uint256)
    provider: indexed(address)
    root: bytes32
    manifest: bytes32
    segments: uint256
    k: uint256

event TraceReleased:
    job_id: indexed(uint256)
    round: indexed(uint256)
    provider: indexed(address)

event VerifierJoined:
    verifier: indexed(address)

event VerifierLeft:
    verifier: indexed(address)

event CheckReported:
    job_id: indexed(uint256)
    round: indexed(uint256)
    verifier: indexed(address)
    provider: address
    checked: bytes32
    passed: bool

event ChallengeOpened:
    id: indexed(uint256)
    job_id: indexed(uint256)
    round: indexed(uint256)
    provider: address
    challenger: address
    segment: uint256
    committee: DynArray[address, MAX_COMMITTEE]

event MidpointPosted:
    id: indexed(uint256)
    step: uint256
    params: bytes32

event MidpointAnswered:
    id: indexed(uint256)
    agree: bool
    lo: uint256
    hi: uint256

event VotingOpened:
    id: indexed(uint256)
    step: uint256
    lo_hash: bytes32
    hi_hash: bytes32
    deadline: uint256

event Voted:
    id: indexed(uint256)
    verifier: indexed(address)
    provider_right: bool

event ChallengeResolved:
    id: indexed(uint256)
    outcome: uint8
    slashed: uint256

event Withdrawn:
    account: indexed(address)
    amount: uint256


registry: public(immutable(IRegistry))
provider_bond: public(immutable(uint256))
challenger_bond: public(immutable(uint256))
challenge_window: public(immutable(uint256))
response_timeout: public(immutable(uint256))
vote_period: public(immutable(uint256))
committee_size: public(immutable(uint256))
verifier_share_bps: public(immutable(uint256))

# keccak256(abi_encode(job_id, round, provider)) -> its trace
traces: public(HashMap[bytes32, Trace])
# keccak256(abi_encode(job_id, round)) -> unresolved challenges in that round
open_in_round: public(HashMap[bytes32, uint256])
challenges: public(HashMap[uint256, Challenge])
challenge_count: public(uint256)
voted: public(HashMap[uint256, HashMap[address, uint8]])  # 1 provider right, 2 challenger right
pool: public(DynArray[address, MAX_POOL])
in_pool: public(HashMap[address, bool])
owed: public(HashMap[address, uint256])
# keccak256(abi_encode(job_id, round)) -> verifier -> what it last reported checking
reported: public(HashMap[bytes32, HashMap[address, bytes32]])


@deploy
def __init__(
    registry_: address,
    provider_bond_: uint256,
    challenger_bond_: uint256,
    challenge_window_: uint256,
    response_timeout_: uint256,
    vote_period_: uint256,
    committee_size_: uint256,
    verifier_share_bps_: uint256,
):
    """
    @notice Deploy the court; it must then be authorized as a slasher in the Registry.
    @param registry_ The Registry whose stake providers lock here.
    @param provider_bond_ Wei of stake a provider locks per committed trace (what a lost
           dispute slashes).
    @param challenger_bond_ Wei a challenger posts (what a lost dispute forfeits).
    @param challenge_window_ Seconds after a commit during which it can be challenged.
    @param response_timeout_ Seconds a party has for each bisection move.
    @param vote_period_ Seconds the committee has to vote on the last step.
    @param committee_size_ Verifiers who vote on a step: odd, 1 to 15.
    @param verifier_share_bps_ Share of the loser's forfeit paid to the majority voters.
    """
    assert registry_ != empty(address), "disputes: registry is the zero address"
    assert provider_bond_ > 0 and challenger_bond_ > 0, "disputes: bonds must be positive"
    assert challenge_window_ > 0 and challenge_window_ <= MAX_PERIOD, "disputes: bad challenge window"
    assert response_timeout_ > 0 and response_timeout_ <= MAX_PERIOD, "disputes: bad response timeout"
    assert vote_period_ > 0 and vote_period_ <= MAX_PERIOD, "disputes: bad vote period"
    assert committee_size_ % 2 == 1 and committee_size_ <= MAX_COMMITTEE, "disputes: committee size must be odd, at most 15"
    assert verifier_share_bps_ <= BPS, "disputes: verifier share above 100%"
    registry = IRegistry(registry_)
    provider_bond = provider_bond_
    challenger_bond = challenger_bond_
    challenge_window = challenge_window_
    response_timeout = response_timeout_
    vote_period = vote_period_
    committee_size = committee_size_
    verifier_share_bps = verifier_share_bps_


@pure
@internal
def _trace_key(job_id: uint256, round: uint256, provider: address) -> bytes32:
    return keccak256(abi_encode(job_id, round, provider))


@pure
@internal
def _round_key(job_id: uint256, round: uint256) -> bytes32:
    return keccak256(abi_encode(job_id, round))


@pure
@internal
def _lock_id(job_id: uint256, round: uint256) -> uint256:
    # The Registry keys locks by (slasher, id, node): one lock per provider and round.
    return convert(keccak256(abi_encode(job_id, round)), uint256)


@pure
@internal
def _leaf(step: uint256, params: bytes32, batches: bytes32) -> bytes32:
    return sha256(concat(b"\x00", convert(step, bytes32), params, batches))


@pure
@internal
def _proves(root: bytes32, leaf: bytes32, index: uint256, proof: DynArray[bytes32, MAX_DEPTH]) -> bool:
    word: bytes32 = leaf
    i: uint256 = index
    for sibling: bytes32 in proof:
        if i % 2 == 0:
            word = sha256(concat(b"\x01", word, sibling))
        else:
            word = sha256(concat(b"\x01", sibling, word))
        i //= 2
    return word == root and i == 0


@external
def commit_trace(job_id: uint256, round: uint256, root: bytes32, manifest: bytes32, segments: uint256, k: uint256):
    """
    @notice Commit the root of the caller's training trace for (job, round) and lock
            `provider_bond` of its free stake for it.
    @param job_id The job.
    @param round The round.
    @param root Merkle root over the trace's `segments + 1` leaves (allmende.verify.merkle).
    @param manifest SHA-256 of the blob listing the leaves, which verifiers fetch by it.
    @param segments Checkpoints after the start: 1 to 2**20 - 1.
    @param k Steps between checkpoints: 1 to 2**20.
    """
    assert staticcall registry.has_role(msg.sender, ROLE_PROVIDER), "disputes: caller is not a provider"
    assert root != empty(bytes32) and manifest != empty(bytes32), "disputes: root or manifest is zero"
    assert segments > 0 and segments < 2**MAX_DEPTH, "disputes: segments out of range"
    assert k > 0 and k <= MAX_K, "disputes: k out of range"
    key: bytes32 = self._trace_key(job_id, round, msg.sender)
    assert self.traces[key].committed_at == 0, "disputes: trace already committed"
    self.traces[key] = Trace(
        root=root, manifest=manifest, segments=segments, k=k, committed_at=block.timestamp,
        open_challenges=0, released=False, slashed=False,
    )
    extcall registry.lock(msg.sender, self._lock_id(job_id, round), provider_bond)
    log TraceCommitted(job_id=job_id, round=round, provider=msg.sender, root=root, manifest=manifest, segments=segments, k=k)


@external
def release(job_id: uint256, round: uint256, provider: address):
    """
    @notice Unlock a provider's bond for (job, round) once the challenge window passed
            with no challenge open. Anyone may call.
    @param job_id The job.
    @param round The round.
    @param provider The provider.
    """
    key: bytes32 = self._trace_key(job_id, round, provider)
    trace: Trace = self.traces[key]
    assert trace.committed_at != 0, "disputes: no such trace"
    assert not trace.released and not trace.slashed, "disputes: trace already settled"
    assert block.timestamp > trace.committed_at + challenge_window, "disputes: challenge window still open"
    assert trace.open_challenges == 0, "disputes: trace has an open challenge"
    self.traces[key].released = True
    extcall registry.unlock(provider, self._lock_id(job_id, round))
    log TraceReleased(job_id=job_id, round=round, provider=provider)


@external
def join_pool():
    """
    @notice Offer to sit on dispute committees. The caller must be an active node with
            the verifier role; a node that is no longer active is skipped when drawn.
    """
    assert not self.in_pool[msg.sender], "disputes: already in the pool"
    assert staticcall registry.has_role(msg.sender, ROLE_VERIFIER), "disputes: caller is not a verifier"
    assert staticcall registry.is_active(msg.sender), "disputes: caller is not active"
    assert len(self.pool) < MAX_POOL, "disputes: the verifier pool is full"
    self.pool.append(msg.sender)
    self.in_pool[msg.sender] = True
    log VerifierJoined(verifier=msg.sender)


@external
def leave_pool():
    """
    @notice Leave the verifier pool (committees already drawn keep the caller's seat).
    """
    assert self.in_pool[msg.sender], "disputes: not in the pool"
    n: uint256 = len(self.pool)
    for i: uint256 in range(MAX_POOL):
        if i == n:
            break
        if self.pool[i] == msg.sender:
            self.pool[i] = self.pool[n - 1]
            self.pool.pop()
            break
    self.in_pool[msg.sender] = False
    log VerifierLeft(verifier=msg.sender)


@external
def report_check(job_id: uint256, round: uint256, provider: address, checked: bytes32, passed: bool):
    """
    @notice Record what a verifier in the pool checked of a provider's trace (the hash of
            the segments it re-executed), so a verifier that never checks is visible.
    @param job_id The job.
    @param round The round.
    @param provider The provider whose trace was checked.
    @param checked A hash of the sampled segments and their results.
    @param passed Whether every sampled segment replayed.
    """
    assert self.in_pool[msg.sender], "disputes: caller is not in the verifier pool"
    assert self.traces[self._trace_key(job_id, round, provider)].committed_at != 0, "disputes: no such trace"
    assert checked != empty(bytes32), "disputes: checked is zero"
    self.reported[self._round_key(job_id, round)][msg.sender] = checked
    log CheckReported(job_id=job_id, round=round, verifier=msg.sender, provider=provider, checked=checked, passed=passed)


@internal
def _draw(id: uint256, provider: address, challenger: address) -> DynArray[address, MAX_COMMITTEE]:
    """A partial Fisher-Yates shuffle of the pool, skipping the parties and inactive nodes."""
    seed: bytes32 = keccak256(concat(block.prevrandao, convert(id, bytes32)))
    candidates: DynArray[address, MAX_POOL] = self.pool
    n: uint256 = len(candidates)
    committee: DynArray[address, MAX_COMMITTEE] = []
    for j: uint256 in range(MAX_POOL):
        if j == n or len(committee) == committee_size:
            break
        r: uint256 = j + convert(keccak256(concat(seed, convert(j, bytes32))), uint256) % (n - j)
        pick: address = candidates[r]
        candidates[r] = candidates[j]
        candidates[j] = pick
        if pick != provider and pick != challenger and staticcall registry.is_active(pick):
            committee.append(pick)
    assert len(committee) == committee_size, "disputes: too few eligible verifiers in the pool"
    return committee


@external
@payable
def open_challenge(
    job_id: uint256,
    round: uint256,
    provider: address,
    segment: uint256,
    first_params: bytes32,
    first_batches: bytes32,
    first_proof: DynArray[bytes32, MAX_DEPTH],
    last_params: bytes32,
    last_batches: bytes32,
    last_proof: DynArray[bytes32, MAX_DEPTH],
) -> uint256:
    """
    @notice Challenge segment `segment` of a provider's trace: the step from checkpoint
            `segment` to `segment + 1` did not replay. Posts `challenger_bond` (msg.value).
    @dev Both leaves are proven against the committed root. The committee is drawn now.
    @param job_id The job.
    @param round The round.
    @param provider The provider challenged.
    @param segment The segment (0 .. segments - 1).
    @param first_params Parameter hash of leaf `segment`.
    @param first_batches Batch hash of leaf `segment`.
    @param first_proof Its Merkle proof.
    @param last_params Parameter hash of leaf `segment + 1` (the disputed claim).
    @param last_batches Batch hash of leaf `segment + 1`.
    @param last_proof Its Merkle proof.
    @return The challenge id.
    """
    assert msg.value == challenger_bond, "disputes: send exactly challenger_bond"
    assert msg.sender != provider, "disputes: a provider cannot challenge itself"
    key: bytes32 = self._trace_key(job_id, round, provider)
    trace: Trace = self.traces[key]
    assert trace.committed_at != 0, "disputes: no such trace"
    assert not trace.slashed and not trace.released, "disputes: trace already settled"
    assert block.timestamp <= trace.committed_at + challenge_window, "disputes: challenge window closed"
    assert trace.open_challenges < MAX_OPEN_PER_TRACE, "disputes: too many open challenges on this trace"
    assert segment < trace.segments, "disputes: no such segment"
    lo: uint256 = segment * trace.k
    hi: uint256 = lo + trace.k
    assert self._proves(trace.root, self._leaf(lo, first_params, first_batches), segment, first_proof), "disputes: bad proof of the first leaf"
    assert self._proves(trace.root, self._leaf(hi, last_params, last_batches), segment + 1, last_proof), "disputes: bad proof of the last leaf"
    id: uint256 = self.challenge_count
    self.challenge_count = id + 1
    committee: DynArray[address, MAX_COMMITTEE] = self._draw(id, provider, msg.sender)
    state: uint8 = PROVIDER_TURN
    deadline: uint256 = block.timestamp + response_timeout
    if trace.k == 1:
        state = VOTING
        deadline = block.timestamp + vote_period
    self.challenges[id] = Challenge(
        job_id=job_id, round=round, provider=provider, challenger=msg.sender, lo=lo, hi=hi,
        lo_hash=first_params, hi_hash=last_params, mid_hash=empty(bytes32), state=state,
        deadline=deadline, committee=committee, votes_provider=0, votes_challenger=0,
    )
    self.traces[key].open_challenges = trace.open_challenges + 1
    self.open_in_round[self._round_key(job_id, round)] += 1
    log ChallengeOpened(id=id, job_id=job_id, round=round, provider=provider, challenger=msg.sender, segment=segment, committee=committee)
    if state == VOTING:
        log VotingOpened(id=id, step=lo, lo_hash=first_params, hi_hash=last_params, deadline=deadline)
    return id


@external
def post_midpoint(id: uint256, params: bytes32):
    """
    @notice The provider states its parameter hash at step (lo + hi) // 2.
    @param id The challenge.
    @param params SHA-256 of the checkpoint blob at that step (which it must serve).
    """
    c: Challenge = self.challenges[id]
    assert c.state == PROVIDER_TURN, "disputes: not the provider's turn"
    assert msg.sender == c.provider, "disputes: caller is not the provider"
    assert block.timestamp <= c.deadline, "disputes: response deadline passed"
    assert params != empty(bytes32), "disputes: params is zero"
    self.challenges[id].mid_hash = params
    self.challenges[id].state = CHALLENGER_TURN
    self.challenges[id].deadline = block.timestamp + response_timeout
    log MidpointPosted(id=id, step=(c.lo + c.hi) // 2, params=params)


@external
def answer_midpoint(id: uint256, agree: bool):
    """
    @notice The challenger agrees (the fault is after the midpoint) or disagrees (it is
            before); the disputed range halves. At one step, voting opens.
    @param id The challenge.
    @param agree Whether the challenger's own replay gives the provider's midpoint hash.
    """
    c: Challenge = self.challenges[id]
    assert c.state == CHALLENGER_TURN, "disputes: not the challenger's turn"
    assert msg.sender == c.challenger, "disputes: caller is not the challenger"
    assert block.timestamp <= c.deadline, "disputes: response deadline passed"
    mid: uint256 = (c.lo + c.hi) // 2
    if agree:
        self.challenges[id].lo = mid
        self.challenges[id].lo_hash = c.mid_hash
        c.lo = mid
        c.lo_hash = c.mid_hash
    else:
        self.challenges[id].hi = mid
        self.challenges[id].hi_hash = c.mid_hash
        c.hi = mid
        c.hi_hash = c.mid_hash
    self.challenges[id].mid_hash = empty(bytes32)
    log MidpointAnswered(id=id, agree=agree, lo=c.lo, hi=c.hi)
    if c.hi - c.lo == 1:
        self.challenges[id].state = VOTING
        self.challenges[id].deadline = block.timestamp + vote_period
        log VotingOpened(id=id, step=c.lo, lo_hash=c.lo_hash, hi_hash=c.hi_hash, deadline=block.timestamp + vote_period)
    else:
        self.challenges[id].state = PROVIDER_TURN
        self.challenges[id].deadline = block.timestamp + response_timeout


@external
def vote(id: uint256, provider_right: bool):
    """
    @notice A committee member's verdict on the last step: does one SGD step from the
            state `lo_hash` at step `lo`, on the plan's batch of that step, give `hi_hash`?
            A majority settles the challenge at once.
    @dev A member that cannot fetch the `lo` checkpoint from either party votes against
         the provider, whose duty it is to serve it.
    @param id The challenge.
    @param provider_right True when the replay gives `hi_hash`.
    """
    c: Challenge = self.challenges[id]
    assert c.state == VOTING, "disputes: challenge is not being voted on"
    assert block.timestamp <= c.deadline, "disputes: vote period over"
    assert msg.sender in c.committee, "disputes: caller is not on the committee"
    assert self.voted[id][msg.sender] == 0, "disputes: already voted"
    majority: uint256 = len(c.committee) // 2 + 1
    if provider_right:
        self.voted[id][msg.sender] = 1
        self.challenges[id].votes_provider = c.votes_provider + 1
        log Voted(id=id, verifier=msg.sender, provider_right=True)
        if c.votes_provider + 1 >= majority:
            self._settle(id, CHALLENGER_LOST, 1)
    else:
        self.voted[id][msg.sender] = 2
        self.challenges[id].votes_challenger = c.votes_challenger + 1
        log Voted(id=id, verifier=msg.sender, provider_right=False)
        if c.votes_challenger + 1 >= majority:
            self._settle(id, PROVIDER_LOST, 2)


@external
def timeout(id: uint256):
    """
    @notice Settle a challenge whose current deadline passed: the party whose turn it was
            loses; a vote without a majority ends undecided (bond back, nobody slashed).
            Anyone may call.
    @param id The challenge.
    """
    c: Challenge = self.challenges[id]
    assert c.state in [PROVIDER_TURN, CHALLENGER_TURN, VOTING], "disputes: challenge is not open"
    assert block.timestamp > c.deadline, "disputes: deadline not passed"
    if c.state == PROVIDER_TURN:
        self._settle(id, PROVIDER_LOST, 0)
    elif c.state == CHALLENGER_TURN:
        self._settle(id, CHALLENGER_LOST, 0)
    else:
        self._settle(id, UNDECIDED, 0)


@external
def abandon(id: uint256):
    """
    @notice Close a challenge on a trace that another challenge already slashed; its
            bond is returned. Anyone may call.
    @param id The challenge.
    """
    c: Challenge = self.challenges[id]
    assert c.state in [PROVIDER_TURN, CHALLENGER_TURN, VOTING], "disputes: challenge is not open"
    assert self.traces[self._trace_key(c.job_id, c.round, c.provider)].slashed, "disputes: trace was not slashed"
    self._settle(id, ABANDONED, 0)


@internal
def _settle(id: uint256, outcome: uint8, side: uint8):
    """Close challenge `id`; `side` (1 provider, 2 challenger; 0 none) names the majority
    voters who share `verifier_share_bps` of the forfeit."""
    c: Challenge = self.challenges[id]
    self.challenges[id].state = outcome
    key: bytes32 = self._trace_key(c.job_id, c.round, c.provider)
    self.traces[key].open_challenges -= 1
    self.open_in_round[self._round_key(c.job_id, c.round)] -= 1
    winners: DynArray[address, MAX_COMMITTEE] = []
    if side != 0:
        for member: address in c.committee:
            if self.voted[id][member] == side:
                winners.append(member)
    slashed: uint256 = 0
    if outcome == PROVIDER_LOST:
        self.traces[key].slashed = True
        lock_id: uint256 = self._lock_id(c.job_id, c.round)
        share: uint256 = 0
        if len(winners) > 0:
            share = provider_bond * verifier_share_bps // BPS // len(winners)
        for member: address in winners:
            slashed += extcall registry.slash(c.provider, lock_id, share, member)
        slashed += extcall registry.slash(c.provider, lock_id, provider_bond, c.challenger)
        self.owed[c.challenger] += challenger_bond
    elif outcome == CHALLENGER_LOST:
        share: uint256 = 0
        if len(winners) > 0:
            share = challenger_bond * verifier_share_bps // BPS // len(winners)
        for member: address in winners:
            self.owed[member] += share
        self.owed[c.provider] += challenger_bond - share * len(winners)
    else:
        self.owed[c.challenger] += challenger_bond
    log ChallengeResolved(id=id, outcome=outcome, slashed=slashed)


@external
@nonreentrant
def withdraw():
    """
    @notice Pay the caller what settled challenges credited to it (pull payment).
    """
    amount: uint256 = self.owed[msg.sender]
    assert amount > 0, "disputes: nothing owed"
    self.owed[msg.sender] = 0
    log Withdrawn(account=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)


@view
@external
def is_held(job_id: uint256, round: uint256) -> bool:
    """
    @notice Whether payouts of (job, round) must wait: a challenge on it is unresolved.
    @param job_id The job.
    @param round The round.
    @return True while any challenge of that round is open.
    """
    return self.open_in_round[self._round_key(job_id, round)] > 0


@view
@external
def trace_of(job_id: uint256, round: uint256, provider: address) -> Trace:
    """
    @notice A provider's trace commitment for (job, round) (all zero when none).
    @param job_id The job.
    @param round The round.
    @param provider The provider.
    @return (root, manifest, segments, k, committed_at, open_challenges, released, slashed).
    """
    return self.traces[self._trace_key(job_id, round, provider)]


@view
@external
def committee_of(id: uint256) -> DynArray[address, MAX_COMMITTEE]:
    """
    @notice The committee drawn for a challenge.
    @param id The challenge.
    @return Its members.
    """
    return self.challenges[id].committee


@view
@external
def pool_size() -> uint256:
    """
    @notice How many verifiers are in the pool.
    @return The pool's length.
    """
    return len(self.pool)
