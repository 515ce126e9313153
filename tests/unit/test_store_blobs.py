"""The content-addressed blob store: atomic writes, hash checks, quarantine, limits, gc."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from allmende.errors import BlobNameError, BlobNotFound, BlobTooLarge, HashMismatch
from allmende.store.blobs import BlobStore, check_digest


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", max_blob_bytes=1000)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_put_names_the_blob_by_its_sha256(store: BlobStore) -> None:
    digest = store.put_bytes(b"hello")
    assert digest == _sha(b"hello")
    assert store.has(digest)
    assert store.size(digest) == 5
    assert store.path(digest).read_bytes() == b"hello"
    assert store.read_bytes(digest) == b"hello"
    assert list(store.digests()) == [digest]


def test_put_with_the_wrong_expected_hash_stores_nothing(store: BlobStore) -> None:
    with pytest.raises(HashMismatch, match="not to the requested"):
        store.put_bytes(b"hello", expected=_sha(b"other"))
    assert list(store.digests()) == []
    assert list(store.tmp_dir.iterdir()) == []


def test_put_chunks_and_file(store: BlobStore, tmp_path: Path) -> None:
    assert store.put_chunks([b"ab", b"", b"cd"]) == _sha(b"abcd")
    source = tmp_path / "f.bin"
    source.write_bytes(b"x" * 999)
    assert store.put_file(source, expected=_sha(b"x" * 999)) == _sha(b"x" * 999)


def test_size_limit_is_enforced_while_writing(store: BlobStore) -> None:
    assert store.put_bytes(b"x" * 1000)
    with pytest.raises(BlobTooLarge, match="1000 bytes"):
        store.put_chunks([b"x" * 600, b"x" * 401])
    with store.writer(max_bytes=10) as writer, pytest.raises(BlobTooLarge):
        writer.write(b"x" * 11)
    assert list(store.tmp_dir.iterdir()) == []


def test_an_aborted_writer_leaves_nothing(store: BlobStore) -> None:
    with store.writer() as writer:
        writer.write(b"partial")
    assert writer.digest is None
    assert list(store.tmp_dir.iterdir()) == []
    assert list(store.digests()) == []


def test_corruption_on_disk_is_detected_on_read_and_quarantined(store: BlobStore) -> None:
    digest = store.put_bytes(b"good bytes")
    store.path(digest).write_bytes(b"bad bytes!")
    with pytest.raises(HashMismatch, match="corrupted on disk"):
        store.read_bytes(digest)
    assert not store.has(digest)
    assert [p.read_bytes() for p in store.quarantine_dir.iterdir()] == [b"bad bytes!"]
    with pytest.raises(BlobNotFound):
        store.read_bytes(digest)


def test_verify_reports_good_and_bad_blobs(store: BlobStore) -> None:
    good = store.put_bytes(b"good")
    bad = store.put_bytes(b"bad")
    store.path(bad).write_bytes(b"BAD")
    assert store.verify(good)
    assert not store.verify(bad)
    assert store.has(good) and not store.has(bad)


def test_unknown_and_malformed_names(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound, match="fetch it from a peer"):
        store.read_bytes("0" * 64)
    with pytest.raises(BlobNotFound):
        store.size("0" * 64)
    for bad in ("0" * 63, "G" * 64, "../" + "0" * 61, "A" * 64, "0" * 64 + "\n", "0" * 65):
        with pytest.raises(BlobNameError, match="not a SHA-256") as caught:
            check_digest(bad)
        assert not isinstance(caught.value, HashMismatch)  # a bad name is not a bad hash
        with pytest.raises(BlobNameError):
            store.path(bad)
    assert not store.delete("0" * 64)


def test_gc_removes_only_old_unpinned_blobs_and_stale_temporaries(store: BlobStore) -> None:
    old_kept = store.put_bytes(b"kept")
    old_dropped = store.put_bytes(b"dropped")
    young = store.put_bytes(b"young")
    stale_tmp = store.tmp_dir / "blob-x.part"
    stale_tmp.write_bytes(b"half")
    past = time.time() - 7200
    for path in (store.path(old_kept), store.path(old_dropped), stale_tmp):
        os.utime(path, (past, past))
    removed = store.gc({old_kept}, grace_seconds=3600)
    assert removed == [old_dropped]
    assert store.has(old_kept) and store.has(young) and not store.has(old_dropped)
    assert not stale_tmp.exists()


@pytest.mark.parametrize(("durable", "fsyncs"), [(True, 2), (False, 0)])
def test_only_durable_writes_wait_for_the_disk(
    store: BlobStore, monkeypatch, durable, fsyncs
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    data = b"a copy fetched from a peer" if not durable else b"this node's own update"
    with store.writer(hashlib.sha256(data).hexdigest(), durable=durable) as writer:
        writer.write(data)
        digest = writer.commit()
    assert len(synced) == fsyncs  # the file and its folder, or neither
    assert store.read_bytes(digest) == data  # stored and readable either way
