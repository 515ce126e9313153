"""Verified reads of a job's data: its spec, models and updates, fetched by hash and checked.

Everything a job names on chain is a hash; the bytes come from peers, so each read here fetches
the blob by that hash (the peer client checks it while receiving), then checks what the bytes
say: a spec must parse and agree with the job's on-chain record, and a model or update must be
a canonical tensor blob with the keys, shapes and dtypes of the task's reference model and
finite values. Such a blob has exactly the encoded size of the reference model, so a fetch of
one more byte is cut off, and its header is parsed only if it is no longer than the
reference's. This is the one place where these checks run: a role, ``allmende job show``
and the lineage check all read job data through :func:`fetch_spec`, :func:`fetch_state` and
:func:`fetch_tensors`, each taking the peer client and the blob store it fetches into.

An update names its author: its blob's ``__metadata__`` is :func:`update_metadata` of the job,
the round and the trainer that committed it, so the same bytes committed by anybody else name
somebody else (a copy, which aggregators leave out). A model blob carries no metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from allmende.errors import AggregationError, CodecError, ConfigError
from allmende.node.jobspec import JobSpec

if TYPE_CHECKING:
    from torch import Tensor

    from allmende.chain import Job
    from allmende.net.client import PeerClient
    from allmende.store.blobs import BlobStore
    from allmende.store.codec import TensorBlob

State = dict[str, "Tensor"]

# A spec blob (canonical JSON) is a few hundred bytes; a fetch of more is refused.
MAX_SPEC_BLOB_BYTES = 1024 * 1024
EMPTY_HASH = bytes(32)  # a bytes32 the chain has not set


def update_metadata(job_id: int, round_: int, trainer: str) -> dict[str, str]:
    """The ``__metadata__`` of ``trainer``'s update for round ``round_`` of job ``job_id``: who
    made it, for what. Aggregators include an update only when it names exactly the trainer
    that committed it, in that job and round."""
    return {
        "allmende.job": str(job_id),
        "allmende.round": str(round_),
        "allmende.trainer": trainer.lower(),
    }


def hex_hash(value: bytes) -> str:
    """A bytes32 hash from the chain as the blob store's lower-case hex name."""
    return bytes(value).hex()


def check_spec_matches(spec: JobSpec, job: Job) -> None:
    """:class:`ConfigError` unless the spec agrees with the job's on-chain settings."""
    pairs = {
        "rounds": (spec.rounds, job.rounds),
        "reward_per_round": (spec.reward_per_round, job.reward_per_round),
        "min_trainers": (spec.min_trainers, job.min_trainers),
        "max_trainers": (spec.max_trainers, job.max_trainers),
        "quorum": (spec.quorum, job.quorum),
        "round_deadline": (spec.round_deadline, job.round_deadline),
        "committee size": (spec.committee_size, job.committee_size),
        "open committee": (not spec.committee.named, job.open_committee),
        "trainer_stake": (spec.trainer_stake, job.trainer_stake),
        "aggregator_stake": (spec.aggregator_stake, job.aggregator_stake),
        "weight cap": (spec.weight_cap, job.weight_cap),
    }
    wrong = [f"{name} {a} vs {b}" for name, (a, b) in pairs.items() if a != b]
    if wrong:
        raise ConfigError(
            f"The job spec disagrees with the job on chain ({', '.join(wrong)}); the job was "
            "created inconsistently and will not be worked on."
        )


async def fetch_spec(
    peers: PeerClient, store: BlobStore, job: Job, endpoints: Sequence[str]
) -> JobSpec:
    """The job's spec blob, fetched by hash from ``endpoints`` into ``store`` and parsed;
    :class:`ConfigError` when it is not a spec, or not this job's."""
    digest = hex_hash(job.spec_hash)
    await peers.fetch_blob(digest, endpoints, max_bytes=MAX_SPEC_BLOB_BYTES)
    spec = JobSpec.from_bytes(store.read_bytes(digest))
    check_spec_matches(spec, job)
    return spec


async def fetch_state(
    peers: PeerClient,
    store: BlobStore,
    digest: str,
    endpoints: Sequence[str],
    *,
    reference: State,
    metadata: Mapping[str, str] | None = None,
) -> State:
    """Tensors of blob ``digest`` from ``endpoints``: canonical, finite, shaped like
    ``reference``, and carrying exactly ``metadata`` (none for a model; an update's
    :func:`update_metadata`). The returned state needs no further check of those properties.

    Raises as :func:`fetch_tensors` does, and :class:`~allmende.errors.CodecError` when the
    blob's metadata is not ``metadata``.
    """
    blob = await fetch_tensors(
        peers, store, digest, endpoints, reference=reference, metadata=metadata
    )
    expected = dict(metadata or {})
    if blob.metadata != expected:
        raise CodecError(
            f"Blob {digest} carries metadata {blob.metadata or 'none'}, not {expected or 'none'}"
            "; it is not the blob the chain names here (an update names its job, round and "
            "author; a model names nothing)."
        )
    return blob.state


async def fetch_tensors(
    peers: PeerClient,
    store: BlobStore,
    digest: str,
    endpoints: Sequence[str],
    *,
    reference: State,
    metadata: Mapping[str, str] | None = None,
) -> TensorBlob:
    """Blob ``digest`` from ``endpoints``, decoded: canonical, finite, shaped like
    ``reference``; its metadata and payload hash are returned for the caller to judge.

    A peer may send at most the encoded size of ``reference`` with ``metadata`` (the exact
    size of any model of this task, or of any update with metadata that long). Raises
    :class:`~allmende.errors.PeerError` when no peer serves it (within that size), and
    :class:`~allmende.errors.CodecError` or :class:`~allmende.errors.AggregationError`, naming
    the blob and where it came from, when the bytes are not a model of this task.
    """
    from allmende.learn.aggregate import check_update  # torch: only for who reads tensors
    from allmende.store.codec import decode_blob, encoded_size, header_size

    size = encoded_size(reference, metadata=metadata)
    fetched = await peers.fetch_blob(digest, endpoints, max_bytes=size)
    source = f"served by {fetched.peer}" if fetched.peer else "from the local store"
    try:
        if fetched.size > size:  # stored before, without this limit
            raise CodecError(f"it has {fetched.size} bytes, a model of this task has {size}.")
        blob = decode_blob(  # the tensors are views of the blob's file: nothing is copied
            store.map_verified(digest),
            max_header_bytes=header_size(reference, metadata=metadata),
        )
        check_update(blob.state, reference)
    except CodecError as exc:
        raise CodecError(f"Blob {digest} ({source}) is not a model of this task: {exc}") from None
    except AggregationError as exc:
        raise AggregationError(f"Blob {digest} ({source}): {exc}") from None
    return blob
