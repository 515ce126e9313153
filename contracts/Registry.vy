# pragma version 0.4.3
"""
@title Allmende node registry
@notice Membership and stake of the network's nodes. A node registers its HTTP
        endpoint and roles, stakes ETH, and can unbond its stake after a delay.
        Contracts that the admin authorizes (the Jobs contract) may slash stake;
        slashed ETH is credited to a beneficiary, who pulls it with `withdraw`.
@dev    Every ETH amount held by this contract is either somebody's stake, somebody's
        unbonding stake, or credited-but-unwithdrawn slash proceeds.
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

event SlasherSet:
    account: indexed(address)
    allowed: bool

event Slashed:
    node: indexed(address)
    amount: uint256
    beneficiary: indexed(address)
    slasher: indexed(address)

event Withdrawn:
    account: indexed(address)
    amount: uint256


admin: public(address)
min_stake: public(uint256)
unbond_delay: public(uint256)
nodes: public(HashMap[address, Node])
slashers: public(HashMap[address, bool])
owed: public(HashMap[address, uint256])
node_count: public(uint256)
node_at: public(HashMap[uint256, address])


@deploy
def __init__(min_stake: uint256, unbond_delay: uint256):
    """
    @notice Create the registry; the deployer becomes its admin.
    @param min_stake Stake (wei) a node needs to count as active.
    @param unbond_delay Seconds between `request_unbond` and `withdraw_unbonded`.
    """
    self.admin = msg.sender
    self.min_stake = min_stake
    self.unbond_delay = unbond_delay


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
    @notice Move `amount` of the caller's stake to unbonding.
    @dev All unbonding stake becomes available together, `unbond_delay` seconds
         after the latest request.
    @param amount Wei to unbond; at most the current stake.
    """
    assert self.nodes[msg.sender].registered, "registry: not registered"
    assert amount > 0, "registry: amount is zero"
    assert amount <= self.nodes[msg.sender].stake, "registry: amount exceeds stake"
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
def set_slasher(account: address, allowed: bool):
    """
    @notice Authorize (or revoke) a contract to slash stake.
    @param account The slasher, normally the Jobs contract.
    @param allowed True to authorize, False to revoke.
    """
    assert msg.sender == self.admin, "registry: caller is not the admin"
    assert account != empty(address), "registry: slasher is the zero address"
    self.slashers[account] = allowed
    log SlasherSet(account=account, allowed=allowed)


@external
def slash(node: address, amount: uint256, beneficiary: address) -> uint256:
    """
    @notice Take up to `amount` from a node's stake, then from its unbonding stake,
            and credit it to `beneficiary`.
    @dev Never reverts for lack of funds: it takes what there is.
    @param node The node to slash.
    @param amount The most wei to take.
    @param beneficiary Who is credited the slashed wei (pulls it with `withdraw`).
    @return The wei actually taken.
    """
    assert self.slashers[msg.sender], "registry: caller is not an authorized slasher"
    assert beneficiary != empty(address), "registry: beneficiary is the zero address"
    stake: uint256 = self.nodes[node].stake
    from_stake: uint256 = min(amount, stake)
    unbonding: uint256 = self.nodes[node].unbonding
    from_unbonding: uint256 = min(amount - from_stake, unbonding)
    taken: uint256 = from_stake + from_unbonding
    if taken == 0:
        return 0
    self.nodes[node].stake = stake - from_stake
    self.nodes[node].unbonding = unbonding - from_unbonding
    self.owed[beneficiary] += taken
    log Slashed(node=node, amount=taken, beneficiary=beneficiary, slasher=msg.sender)
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
