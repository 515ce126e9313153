"""Compute mode's assignment: which public shards a provider trains on, and in which order.

Everything here is a pure function of what the chain and the job spec fix — the job seed, the
round, the provider's address and the public shards — so a verifier computes exactly what the
provider had to do:

- :func:`assign_shards` picks ``count`` of the job's ``num_shards`` public shards for a
  provider in a round (a ranking by SHA-256, so every provider gets a uniform draw);
- :func:`batch_plan` draws the round's batches: ``(steps, batch_size)`` item indices (rows of a
  table, or window starts of a byte stream), with replacement, from a ``torch.Generator`` seeded
  by :func:`plan_seed`;
- :func:`batch_hash` is what a trace leaf commits to for the steps since the previous checkpoint.

Shards are public blobs (:func:`shard_blob`): the standard-library text shards of ``byte-gpt``
(:mod:`allmende.learn.stdlib_text`) and parts of the digits training split.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import Tensor

from allmende.errors import ConfigError
from allmende.learn.task import LocalData
from allmende.learn.text import ByteWindows, as_windows
from allmende.store.codec import encode_state

SEED_BITS = 63


def _digest(*parts: object) -> bytes:
    text = "/".join(str(part) for part in parts)
    return hashlib.sha256(f"allmende/compute/{text}".encode()).digest()


def plan_seed(job_seed: int, round: int, provider: str) -> int:
    """The seed of a provider's batch order in a round (the address is lower-cased first)."""
    digest = _digest("plan", job_seed, round, provider.lower())
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


def assign_shards(
    job_seed: int, round: int, provider: str, *, num_shards: int, count: int
) -> list[int]:
    """The ``count`` shards (sorted indices into the job's ``num_shards``) a provider trains
    on in ``round``."""
    if not 1 <= count <= num_shards:
        raise ConfigError(
            f"A provider trains on 1 to {num_shards} shards, not {count}; fix "
            "compute.shards_per_provider in the job spec."
        )
    ranked = sorted(
        range(num_shards), key=lambda i: _digest("shard", job_seed, round, provider.lower(), i)
    )
    return sorted(ranked[:count])


def n_items(data: LocalData) -> int:
    """How many items a batch index can name: window starts of a stream, rows otherwise."""
    return data.n_starts if isinstance(data, ByteWindows) else len(data)


def batch_plan(seed: int, *, items: int, steps: int, batch_size: int) -> Tensor:
    """``(steps, batch_size)`` int64 item indices in ``[0, items)``, drawn with ``seed``."""
    if items < 1 or steps < 1 or batch_size < 1:
        raise ConfigError(
            f"A compute round needs items, steps and batch_size >= 1 (got {items}, {steps}, "
            f"{batch_size}); fix the job spec's compute table or the shards."
        )
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, items, (steps, batch_size), generator=generator)  # (steps, b)


def batch_hash(batches: Tensor) -> bytes:
    """SHA-256 of ``batches`` ``(m, b)`` as little-endian int64 (``m`` may be 0)."""
    array = np.ascontiguousarray(batches.to(torch.int64).numpy(), dtype="<i8")
    return hashlib.sha256(array.tobytes()).digest()


def shard_blob(data: LocalData) -> bytes:
    """A shard as a canonical tensor blob (``inputs`` and ``targets``): its SHA-256 names it."""
    return encode_state({"inputs": data.inputs, "targets": data.targets})


def digits_shards(num_shards: int) -> list[LocalData]:
    """The digits training split cut into ``num_shards`` interleaved parts (row ``i`` goes to
    part ``i % num_shards``)."""
    from allmende.learn.digits import DigitsMLP

    data = DigitsMLP().train_data()
    return [
        LocalData(inputs=data.inputs[part::num_shards], targets=data.targets[part::num_shards])
        for part in range(num_shards)
    ]


def join_shards(shards: list[LocalData]) -> LocalData:
    """The shards a provider was assigned, as one dataset (rows, or one byte stream, in order)."""
    if not shards:
        raise ConfigError("A provider is assigned at least one shard.")
    if all(isinstance(shard, ByteWindows) for shard in shards):
        first = shards[0]
        assert isinstance(first, ByteWindows)
        stream = b"".join(
            shard.inputs.numpy().tobytes() + shard.targets[-1:].numpy().tobytes()
            for shard in shards
        )
        return as_windows(stream, context=first.context, windows=first.windows, what="shards")
    return LocalData(
        inputs=torch.cat([shard.inputs for shard in shards]),
        targets=torch.cat([shard.targets for shard in shards]),
    )


def text_shard(stream: bytes, *, context: int) -> ByteWindows:
    """A byte stream (the concatenated files of one standard-library shard) as a shard."""
    return as_windows(stream, context=context, windows=1, what="a text shard")


def stdlib_shards(
    num_shards: int, *, context: int, limit_bytes: int | None = None
) -> list[ByteWindows]:
    """The standard library's ``.py`` files in ``num_shards`` shards (as
    :func:`allmende.learn.stdlib_text.shard_files` cuts them), each one byte stream; at most
    ``limit_bytes`` of each when given (tests and benchmarks keep them small)."""
    from allmende.learn.stdlib_text import shard_of, stdlib_files, stdlib_root

    root = stdlib_root()
    streams: list[list[bytes]] = [[] for _ in range(num_shards)]
    for name in stdlib_files(root):
        streams[shard_of(name, num_shards)].append((root / name).read_bytes())
    shards = []
    for files in streams:
        stream = b"".join(files)
        shards.append(text_shard(stream[:limit_bytes] if limit_bytes else stream, context=context))
    return shards
