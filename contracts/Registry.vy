# pragma version 0.4.3
"""
@title Allmende node registry
@notice Membership and stake of the network's nodes. A node registers its HTTP
        endpoint and roles, stakes ETH, and can unbond its free stake after a delay.
        Contracts that the admin authorizes (the Jobs contract) lock part of a node's
        stake for a job while the node works on it, and may slash only what the node
        locked with them for that job; slashed ETH is credited to a beneficiary, who
        pulls it with `withdraw`. Authorizing or revoking a slasher waits
        `admin_delay` seconds (except the very first one, at deployment), and the
        admin role moves in two steps.
@dev    Every ETH amount held by this contract is either somebody's stake, somebody's
        unbonding stake, or credited-but-unwithdrawn slash proceeds. For every node
        locked(node) <= stake and locked(node) is the sum of its locks; locked stake
        cannot be unbonded, and unbonding stake cannot be slashed.
"""

from interfaces import IRegistry

implements: IRegistry

ROLE_TRAINER: constant(uint256) = 1
ROLE_AGGREGATOR: constant(uint256) = 2
ROLE_VERIFIER: constant(uint256) = 4
ROLE_PROVIDER: constant(uint256) = 8
ALL_ROLES: constant(uint256) = 15


struct Node:
    endpoint: String[256]
    roles: uint256
    metadata: bytes32
    stake: uint256
    unbonding: uint256
    unbond_available_at: uint256
    registered: bool


event NodeRegistered:
    node: indexed(address)
    endpoint: String[256]
    roles: uint256
    metadata: bytes32

event NodeUpdated:
    node: indexed(address)
    endpoint: String[256]
    roles: uint256
    metadata: bytes32

event Staked:
    node: indexed(address)
    amount: uint256
    total: uint256

event UnbondRequested:
    node: indexed(address)
    amount: uint256
    available_at: uint256

event Unbonded:
    node: indexed(address)
    amount: uint256

struct PendingSlasher:
    allowed: bool
    eta: uint256


event SlasherSet:
    account: indexed(address)
    allowed: bool

event SlasherProposed:
    account: indexed(address)
    allowed: bool
    eta: uint256

event SlasherChangeCancelled:
    account: indexed(address)

event AdminTransferStarted:
    admin: indexed(address)
    pending: indexed(address)

event AdminTransferred:
    previous: indexed(address)
    admin: indexed(address)

event Locked:
    node: indexed(address)
    slasher: indexed(address)
    job_id: indexed(uint256)
    amount: uint256

event Unlocked:
    node: indexed(address)
    slasher: indexed(address)
    job_id: indexed(uint256)
    amount: uint256

event Slashed:
    node: indexed(address)
    job_id: uint256
    amount: uint256
    beneficiary: indexed(address)
    slasher: indexed(address)

event Withdrawn:
    account: indexed(address)
    amount: uint256


admin: public(address)
pending_admin: public(address)
min_stake: public(uint256)
unbond_delay: public(uint256)
admin_delay: public(uint256)
nodes: public(HashMap[address, Node])
slashers: public(HashMap[address, bool])
pending_slasher: public(HashMap[address, PendingSlasher])
# True once any slasher was authorized: from then on changes wait admin_delay
slasher_ever_set: public(bool)
locked: public(HashMap[address, uint256])
# slasher -> job id -> node -> wei the node locked for that job with that slasher
lock_of: public(HashMap[address, HashMap[uint256, HashMap[address, uint256]]])
owed: public(HashMap[address, uint256])
node_count: public(uint256)
node_at: public(HashMap[uint256, address])


@deploy
def __init__(min_stake: uint256, unbond_delay: uint256, admin_delay: uint256):
    """
    @notice Create the registry; the deployer becomes its admin.
    @param min_stake Stake (wei) a node needs to count as active.
    @param unbond_delay Seconds between `request_unbond` and `withdraw_unbonded`.
    @param admin_delay Seconds between `propose_slasher` and `apply_slasher`, so nodes
           can see a new slasher coming and unbond their free stake first.
    """
    self.admin = msg.sender
    self.min_stake = min_stake
    self.unbond_delay = unbond_delay
    self.admin_delay = admin_delay


@external
def register(endpoint: String[256], roles: uint256, metadata: bytes32):
    """
    @notice Register the caller as a node, or update its record.
    @dev The first registration appends the caller to the `node_at` list.
    @param endpoint The node's public HTTP endpoint URL.
    @param roles Bitmask of roles: 1 trainer, 2 aggregator, 4 verifier, 8 provider.
    @param metadata Hash of the node's metadata blob (may be empty).
    """
    assert len(endpoint) > 0, "registry: endpoint is empty"
    assert roles != 0 and roles & ALL_ROLES == roles, "registry: roles must be a nonzero mask of 1, 2, 4, 8"
    node: Node = self.nodes[msg.sender]
    node.endpoint = endpoint
    node.roles = roles
    node.metadata = metadata
    if node.registered:
        self.nodes[msg.sender] = node
        log NodeUpdated(node=msg.sender, endpoint=endpoint, roles=roles, metadata=metadata)
        return
    node.registered = True
    self.nodes[msg.sender] = node
    self.node_at[self.node_count] = msg.sender
    self.node_count += 1
    log NodeRegistered(node=msg.sender, endpoint=endpoint, roles=roles, metadata=metadata)


@external
@payable
def stake():
    """
    @notice Add the sent ETH to the caller's stake.
    """
    assert self.nodes[msg.sender].registered, "registry: not registered"
    assert msg.value > 0, "registry: stake is zero"
    total: uint256 = self.nodes[msg.sender].stake + msg.value
    self.nodes[msg.sender].stake = total
    log Staked(node=msg.sender, amount=msg.value, total=total)


@external
def request_unbond(amount: uint256):
    """
    @notice Move `amount` of the caller's free (unlocked) stake to unbonding.
    @dev All unbonding stake becomes available together, `unbond_delay` seconds
         after the latest request. Stake locked for a job cannot be unbonded.
    @param amount Wei to unbond; at most stake - locked.
    """
    assert self.nodes[msg.sender].registered, "registry: not registered"
    assert amount > 0, "registry: amount is zero"
    assert amount <= self.nodes[msg.sender].stake - self.locked[msg.sender], "registry: amount exceeds unlocked stake"
    available_at: uint256 = block.timestamp + self.unbond_delay
    self.nodes[msg.sender].stake -= amount
    self.nodes[msg.sender].unbonding += amount
    self.nodes[msg.sender].unbond_available_at = available_at
    log UnbondRequested(node=msg.sender, amount=amount, available_at=available_at)


@external
@nonreentrant
def withdraw_unbonded():
    """
    @notice Pay the caller its unbonding stake once the delay has passed.
    """
    amount: uint256 = self.nodes[msg.sender].unbonding
    assert amount > 0, "registry: nothing unbonding"
    assert block.timestamp >= self.nodes[msg.sender].unbond_available_at, "registry: unbonding delay has not passed"
    self.nodes[msg.sender].unbonding = 0
    self.nodes[msg.sender].unbond_available_at = 0
    log Unbonded(node=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)


@external
def transfer_admin(new_admin: address):
    """
    @notice Start moving the admin role to `new_admin`; it takes effect when
            `new_admin` calls `accept_admin`. A second call replaces the pending admin.
    @param new_admin The proposed admin (the zero address cancels a pending transfer).
    """
    assert msg.sender == self.admin, "registry: caller is not the admin"
    self.pending_admin = new_admin
    log AdminTransferStarted(admin=msg.sender, pending=new_admin)


@external
def accept_admin():
    """
    @notice Become the admin; only the pending admin may call it.
    """
    assert msg.sender == self.pending_admin and msg.sender != empty(address), "registry: caller is not the pending admin"
    previous: address = self.admin
    self.admin = msg.sender
    self.pending_admin = empty(address)
    log AdminTransferred(previous=previous, admin=msg.sender)


@external
def set_first_slasher(account: address):
    """
    @notice Authorize the first slasher (the Jobs contract) at once, at deployment.
    @dev Only while no slasher was ever authorized; every later change goes through
         `propose_slasher` and waits `admin_delay` seconds.
    @param account The slasher.
    """
    assert msg.sender == self.admin, "registry: caller is not the admin"
    assert account != empty(address), "registry: slasher is the zero address"
    assert not self.slasher_ever_set, "registry: a slasher was already set; use propose_slasher"
    self.slasher_ever_set = True
    self.slashers[account] = True
    log SlasherSet(account=account, allowed=True)


@external
def propose_slasher(account: address, allowed: bool):
    """
    @notice Propose to authorize (or revoke) a slasher; anyone may apply the change
            with `apply_slasher` once `admin_delay` seconds have passed.
    @dev A new proposal for the same account replaces the pending one and restarts its delay.
    @param account The slasher.
    @param allowed True to authorize, False to revoke.
    """
    assert msg.sender == self.admin, "registry: caller is not the admin"
    assert account != empty(address), "registry: slasher is the zero address"
    eta: uint256 = block.timestamp + self.admin_delay
    self.pending_slasher[account] = PendingSlasher(allowed=allowed, eta=eta)
    log SlasherProposed(account=account, allowed=allowed, eta=eta)


@external
def apply_slasher(account: address):
    """
    @notice Apply a proposed slasher change whose delay has passed.
    @param account The slasher.
    """
    pending: PendingSlasher = self.pending_slasher[account]
    assert pending.eta != 0, "registry: no slasher change is pending"
    assert block.timestamp >= pending.eta, "registry: the slasher change delay has not passed"
    self.pending_slasher[account] = empty(PendingSlasher)
    self.slashers[account] = pending.allowed
    if pending.allowed:
        self.slasher_ever_set = True
    log SlasherSet(account=account, allowed=pending.allowed)


@external
def cancel_slasher_change(account: address):
    """
    @notice Drop a pending slasher change.
    @param account The slasher.
    """
    assert msg.sender == self.admin, "registry: caller is not the admin"
    assert self.pending_slasher[account].eta != 0, "registry: no slasher change is pending"
    self.pending_slasher[account] = empty(PendingSlasher)
    log SlasherChangeCancelled(account=account)


@external
def lock(node: address, job_id: uint256, amount: uint256):
    """
    @notice Lock `amount` of a node's free stake for a job of the calling slasher.
    @dev Locked stake cannot be unbonded; only the slasher that locked it can slash
         it (for that job) or unlock it. Reverts when the node lacks free stake, so
         one stake never backs two locks.
    @param node The node.
    @param job_id The slasher's job the stake is locked for.
    @param amount Wei to lock; at most stake - locked(node).
    """
    assert self.slashers[msg.sender], "registry: caller is not an authorized slasher"
    assert self.nodes[node].registered, "registry: not registered"
    assert amount > 0, "registry: amount is zero"
    locked: uint256 = self.locked[node]
    assert amount <= self.nodes[node].stake - locked, "registry: amount exceeds unlocked stake"
    self.locked[node] = locked + amount
    self.lock_of[msg.sender][job_id][node] += amount
    log Locked(node=node, slasher=msg.sender, job_id=job_id, amount=amount)


@external
def unlock(node: address, job_id: uint256) -> uint256:
    """
    @notice Release the whole lock the caller holds on a node for a job.
    @dev Works for a slasher that was since revoked, so its locks never stay stuck.
         Returns 0 (and logs nothing) when there is no lock.
    @param node The node.
    @param job_id The caller's job.
    @return The wei released.
    """
    amount: uint256 = self.lock_of[msg.sender][job_id][node]
    if amount == 0:
        return 0
    self.lock_of[msg.sender][job_id][node] = 0
    self.locked[node] -= amount
    log Unlocked(node=node, slasher=msg.sender, job_id=job_id, amount=amount)
    return amount


@external
def slash(node: address, job_id: uint256, amount: uint256, beneficiary: address) -> uint256:
    """
    @notice Take up to `amount` of the stake a node locked with the caller for a job,
            and credit it to `beneficiary`.
    @dev Takes min(amount, lock_of(caller, job_id, node)) from the node's stake, its
         locked total and that lock. Never reverts for lack of funds: it takes what
         there is. Unbonding stake is never slashed.
    @param node The node to slash.
    @param job_id The caller's job the stake was locked for.
    @param amount The most wei to take.
    @param beneficiary Who is credited the slashed wei (pulls it with `withdraw`).
    @return The wei actually taken.
    """
    assert self.slashers[msg.sender], "registry: caller is not an authorized slasher"
    assert beneficiary != empty(address), "registry: beneficiary is the zero address"
    held: uint256 = self.lock_of[msg.sender][job_id][node]
    taken: uint256 = min(amount, held)
    if taken == 0:
        return 0
    self.lock_of[msg.sender][job_id][node] = held - taken
    self.locked[node] -= taken
    self.nodes[node].stake -= taken
    self.owed[beneficiary] += taken
    log Slashed(node=node, job_id=job_id, amount=taken, beneficiary=beneficiary, slasher=msg.sender)
    return taken


@external
@nonreentrant
def withdraw():
    """
    @notice Pay the caller what slashing credited to it (pull payment).
    """
    amount: uint256 = self.owed[msg.sender]
    assert amount > 0, "registry: nothing owed"
    self.owed[msg.sender] = 0
    log Withdrawn(account=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)


@view
@external
def is_active(node: address) -> bool:
    """
    @notice Whether a node is registered and holds at least `min_stake`.
    @param node The node's address.
    @return True when the node is active.
    """
    return self.nodes[node].registered and self.nodes[node].stake >= self.min_stake


@view
@external
def has_role(node: address, role: uint256) -> bool:
    """
    @notice Whether a registered node declares every role bit in `role`.
    @param node The node's address.
    @param role A role bit (1, 2, 4, 8) or a mask of them.
    @return True when the node is registered and has those roles.
    """
    return self.nodes[node].registered and role != 0 and self.nodes[node].roles & role == role


@view
@external
def stake_of(node: address) -> uint256:
    """
    @notice A node's stake (locked and free; not its unbonding stake).
    @param node The node's address.
    @return The stake in wei.
    """
    return self.nodes[node].stake


@view
@external
def free_stake(node: address) -> uint256:
    """
    @notice The part of a node's stake that is not locked for any job.
    @param node The node's address.
    @return stake - locked(node), in wei.
    """
    return self.nodes[node].stake - self.locked[node]
