"""The Merkle tree over a training trace's leaves, as ``contracts/Disputes.vy`` checks it.

A leaf commits to one checkpoint of a trace::

    leaf = sha256(0x00 || step (32 bytes, big-endian) || parameter hash || batch hash)

where the parameter hash is the SHA-256 of the checkpoint's canonical blob (its name in the blob
store, :func:`allmende.store.codec.state_hash`) and the batch hash is the SHA-256 of the batch
indices trained since the previous checkpoint (see :mod:`allmende.verify.plan`). Inner nodes are
``sha256(0x01 || left || right)``; the leaves are padded with zero words to a power of two, so a
proof is always ``depth`` siblings and the contract can check it in a fixed loop. The prefixes keep
a leaf from being passed off as an inner node.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from allmende.errors import ConfigError

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY = b"\x00" * 32
MAX_DEPTH = 20
"""At most 2**20 leaves (a checkpoint every k steps of a million-step round is plenty);
``Disputes.vy`` has the same bound."""


@dataclass(frozen=True)
class Leaf:
    """One checkpoint of a trace: after ``step`` steps the parameters hash to ``params``; the
    steps since the previous checkpoint trained on the batches hashing to ``batches``."""

    step: int
    params: bytes  # 32 bytes: SHA-256 of the checkpoint blob
    batches: bytes  # 32 bytes: SHA-256 of the batch indices since the previous checkpoint

    def digest(self) -> bytes:
        return leaf_hash(self.step, self.params, self.batches)


def leaf_hash(step: int, params: bytes, batches: bytes) -> bytes:
    """The leaf word of a checkpoint (see the module docstring)."""
    if len(params) != 32 or len(batches) != 32 or not 0 <= step < 2**256:
        raise ConfigError("A trace leaf needs a step in uint256 and two 32-byte hashes.")
    return hashlib.sha256(LEAF_PREFIX + step.to_bytes(32, "big") + params + batches).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _levels(words: list[bytes]) -> list[list[bytes]]:
    if not words:
        raise ConfigError("A trace has at least one leaf (the round's starting model).")
    depth = max(0, (len(words) - 1).bit_length())
    if depth > MAX_DEPTH:
        raise ConfigError(f"A trace has at most 2**{MAX_DEPTH} leaves; checkpoint less often.")
    level = words + [EMPTY] * ((1 << depth) - len(words))
    levels = [level]
    while len(level) > 1:
        level = [_node(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def merkle_root(leaves: list[Leaf]) -> bytes:
    """The root over ``leaves`` (in step order)."""
    return _levels([leaf.digest() for leaf in leaves])[-1][0]


def merkle_proof(leaves: list[Leaf], index: int) -> list[bytes]:
    """The siblings from leaf ``index`` up to the root (``depth`` words)."""
    levels = _levels([leaf.digest() for leaf in leaves])
    if not 0 <= index < len(leaves):
        raise ConfigError(f"The trace has no leaf {index}; it has {len(leaves)}.")
    proof = []
    for level in levels[:-1]:
        proof.append(level[index ^ 1])
        index //= 2
    return proof


def verify_proof(root: bytes, leaf: Leaf, index: int, proof: list[bytes]) -> bool:
    """Whether ``leaf`` sits at ``index`` under ``root`` by ``proof``."""
    if len(proof) > MAX_DEPTH or index >= 1 << len(proof) or index < 0:
        return False
    word = leaf.digest()
    for sibling in proof:
        word = _node(word, sibling) if index % 2 == 0 else _node(sibling, word)
        index //= 2
    return word == root
