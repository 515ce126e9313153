"""Blobs decoded from a memory map of their file and stored piece by piece: the same tensors and
bytes as the in-memory codec, and every check still made."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from allmende.errors import CodecError, HashMismatch
from allmende.store.blobs import BlobStore
from allmende.store.codec import decode_blob, encode_state, write_state

METADATA = {"allmende.job": "1", "allmende.round": "0", "allmende.trainer": "0x" + "ab" * 20}


def state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return {
        "b": torch.randn(33, generator=gen),
        "w": torch.randn(300, 200, generator=gen),
        "steps": torch.tensor([5, 6], dtype=torch.int64),
        "half": torch.randn(17, generator=gen).to(torch.bfloat16),
    }


def test_streamed_writing_stores_the_canonical_bytes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = write_state(store, state(), metadata=METADATA)
    assert store.read_bytes(digest) == encode_state(state(), metadata=METADATA)
    assert digest == hashlib.sha256(encode_state(state(), metadata=METADATA)).hexdigest()
    assert list(store.tmp_dir.iterdir()) == []


def test_a_mapped_blob_decodes_to_the_same_tensors_and_writes_never_reach_the_file(
    tmp_path: Path,
) -> None:
    store = BlobStore(tmp_path)
    digest = write_state(store, state(), metadata=METADATA)
    mapped = decode_blob(store.map_verified(digest))
    in_memory = decode_blob(store.read_bytes(digest))
    assert (mapped.metadata, mapped.payload) == (in_memory.metadata, in_memory.payload)
    for key, tensor in state().items():
        assert torch.equal(mapped.state[key], tensor) and mapped.state[key].dtype == tensor.dtype
    mapped.state["w"].add_(1.0)  # writable, copy on write
    assert store.verify(digest)  # the file is as it was
    assert torch.equal(decode_blob(store.map_verified(digest)).state["w"], state()["w"])


def test_a_rotted_blob_is_quarantined_instead_of_mapped(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = write_state(store, state())
    path = store.path(digest)
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(HashMismatch, match="quarantine"):
        store.map_verified(digest)
    assert not store.has(digest)


def test_a_mapped_blob_gets_every_check_of_the_codec(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    bad = state()
    bad["w"][100, 7] = float("nan")
    digest = store.put_bytes(encode_state(bad))
    with pytest.raises(CodecError, match="NaN or infinite"):
        decode_blob(store.map_verified(digest))
    truncated = store.put_bytes(encode_state(state())[:-4])
    with pytest.raises(CodecError, match="truncated"):
        decode_blob(store.map_verified(truncated))
    assert store.map_verified(store.put_bytes(b"")) == b""
