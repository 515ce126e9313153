"""Verified reads of models and updates: a fetch is cut off at the reference model's size, and a
blob that is not a model of the task is a CodecError naming the blob and the peer."""

from __future__ import annotations

import asyncio
import hashlib
import struct
from pathlib import Path

import httpx
import pytest
import torch

from allmende.errors import AggregationError, CodecError, PeerError
from allmende.net.client import PeerClient
from allmende.node.jobdata import fetch_state, fetch_tensors, update_metadata
from allmende.store.blobs import BlobStore
from allmende.store.codec import encode_state, encoded_size, header_size

REFERENCE = {"fc.weight": torch.zeros(4, 3), "fc.bias": torch.zeros(4)}
HONEST = encode_state({"fc.weight": torch.ones(4, 3), "fc.bias": torch.ones(4)})
# exactly as long as a model of the task, with a header of the right length, nested deep
_N = header_size(REFERENCE)
NESTED = struct.pack("<Q", _N) + b"[" * _N + bytes(encoded_size(REFERENCE) - 8 - _N)
OVERSIZED = HONEST + b" " * 1000  # one byte over is enough; more shows the cut
SHAPED = encode_state({"fc.weight": torch.ones(3, 4), "fc.bias": torch.ones(4)})
AUTHOR = update_metadata(4, 1, "0x" + "ab" * 20)
NAMED = encode_state({"fc.weight": torch.ones(4, 3), "fc.bias": torch.ones(4)}, metadata=AUTHOR)
BLOBS = {hashlib.sha256(b).hexdigest(): b for b in (HONEST, NESTED, OVERSIZED, SHAPED, NAMED)}


def _peer(request: httpx.Request) -> httpx.Response:
    """A peer that serves every blob above, with its true Content-Length or none."""
    data = BLOBS.get(request.url.path.rsplit("/", 1)[-1])
    if data is None:
        return httpx.Response(404)
    if request.url.host == "quiet":  # no Content-Length: the limit is enforced while streaming
        return httpx.Response(200, stream=httpx.ByteStream(data))
    headers = {"content-length": str(len(data))}
    return httpx.Response(200, headers=headers, stream=httpx.ByteStream(data))


@pytest.fixture
def reader(tmp_path: Path):
    store = BlobStore(tmp_path / "blobs")
    client = PeerClient(store, transport=httpx.MockTransport(_peer))
    yield store, client
    asyncio.run(client.aclose())


def _fetch(
    reader, data: bytes, peers: list[str], metadata: dict[str, str] | None = None
) -> dict[str, torch.Tensor]:
    store, client = reader
    digest = hashlib.sha256(data).hexdigest()
    return asyncio.run(
        fetch_state(client, store, digest, peers, reference=REFERENCE, metadata=metadata)
    )


def test_an_update_naming_its_author_is_read_with_exactly_that_metadata(reader) -> None:
    state = _fetch(reader, NAMED, ["http://peer"], AUTHOR)
    assert torch.equal(state["fc.bias"], torch.ones(4))
    other = update_metadata(4, 1, "0x" + "cd" * 20)  # another author, as long
    with pytest.raises(CodecError, match=r"carries metadata .*0xabab"):
        _fetch(reader, NAMED, ["http://peer"], other)
    with pytest.raises(CodecError, match="carries metadata none"):
        _fetch(reader, HONEST, ["http://peer"], AUTHOR)  # a model where an update belongs


def test_a_model_read_where_no_metadata_belongs_cuts_off_an_update_blob(reader) -> None:
    with pytest.raises(PeerError, match="over the limit"):  # longer than any model of the task
        _fetch(reader, NAMED, ["http://peer"])


def test_fetch_tensors_gives_metadata_and_the_payload_hash_of_the_tensors(reader) -> None:
    store, client = reader
    blobs = [
        asyncio.run(
            fetch_tensors(
                client,
                store,
                hashlib.sha256(data).hexdigest(),
                ["http://peer"],
                reference=REFERENCE,
                metadata=AUTHOR,
            )
        )
        for data in (NAMED, HONEST)
    ]
    assert [b.metadata for b in blobs] == [AUTHOR, {}]
    assert blobs[0].payload == blobs[1].payload  # the same tensors under another header


def test_an_update_of_the_task_is_fetched_within_the_exact_limit(reader) -> None:
    assert len(HONEST) == encoded_size(REFERENCE)
    state = _fetch(reader, HONEST, ["http://peer"])
    assert torch.equal(state["fc.weight"], torch.ones(4, 3))


@pytest.mark.parametrize("host", ["peer", "quiet"])
def test_a_blob_larger_than_any_model_of_the_task_is_cut_off_naming_the_peer(
    reader, host: str
) -> None:
    store, _ = reader
    limit = f"(over the limit|size limit of) {len(HONEST)}"  # announced, or sent
    with pytest.raises(PeerError, match=f"http://{host}: .*{limit}"):
        _fetch(reader, OVERSIZED, [f"http://{host}"])
    assert not store.has(hashlib.sha256(OVERSIZED).hexdigest())


def test_a_nested_header_is_a_codec_error_naming_blob_and_peer(reader) -> None:
    digest = hashlib.sha256(NESTED).hexdigest()
    with pytest.raises(CodecError, match=f"Blob {digest} \\(served by http://peer\\).*deep"):
        _fetch(reader, NESTED, ["http://peer"])


def test_a_wrongly_shaped_update_is_an_aggregation_error_naming_the_blob(reader) -> None:
    digest = hashlib.sha256(SHAPED).hexdigest()
    with pytest.raises(AggregationError, match=f"Blob {digest} .*shape"):
        _fetch(reader, SHAPED, ["http://peer"])


def test_an_oversized_blob_already_stored_is_refused_unread(reader) -> None:
    store, _ = reader
    store.put_bytes(OVERSIZED)
    with pytest.raises(CodecError, match=r"from the local store.*has \d+ bytes"):
        _fetch(reader, OVERSIZED, [])
