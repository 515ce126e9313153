"""Content-addressed blob store: files named by their SHA-256 under the node home.

Layout under ``root`` (``<home>/blobs``)::

    ab/abcdef...        a blob, named by its full hex digest, in a folder of its first two digits
    tmp/                blobs being written (temporary file, fsync, rename into place)
    quarantine/         blobs that failed their hash check on read, kept for inspection

Every write is hashed and checked before the rename, so a stored name always matched its bytes once;
every full read is hashed again, and a blob whose bytes rotted on disk is moved to ``quarantine/``
and reported with :class:`~allmende.errors.HashMismatch`, so the caller can fetch it again from a
peer. A large model is read without copying it: :meth:`BlobStore.map_verified` maps its file
(copy on write), so decoded tensors are views of the page cache. The store remembers which blobs
this process hashed lately (:meth:`BlobStore.checked_lately`), so that the API can send those to
peers without hashing them once more. Local tools (``allmende node put``, job submission) put
blobs into a node by writing into its store directly with :meth:`BlobStore.put_file`; there is
no upload endpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

from allmende.errors import BlobNameError, BlobNotFound, BlobTooLarge, HashMismatch, StoreError

# A blob larger than this is refused on write and on fetch. Raise it for big models; every peer
# that must hold a blob needs a limit at least that large.
DEFAULT_MAX_BLOB_BYTES = 4 * 1024**3
# Reads and copies move this much at a time.
CHUNK_BYTES = 1024 * 1024
# A blob this process hashed within this long (it wrote it, or read it whole) is sent to peers
# without hashing it again. Whoever fetches a blob checks its hash anyway; this only decides how
# soon a node notices by itself that a blob rotted on its disk (and quarantines it).
DEFAULT_RECHECK_SECONDS = 600.0
# `gc` leaves unpinned blobs and temporary files younger than this alone (they may be in use).
DEFAULT_GC_GRACE_SECONDS = 3600.0

_DIGEST = re.compile(r"[0-9a-f]{64}")  # whole string only: see check_digest


def check_digest(digest: str) -> str:
    """``digest`` if it is exactly 64 lowercase hex characters (no trailing newline); else
    :class:`BlobNameError`."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise BlobNameError(
            f"{digest!r} is not a SHA-256 blob name; use 64 lowercase hexadecimal characters."
        )
    return digest


class BlobWriter:
    """Receives a blob's bytes in pieces, hashing as they arrive; :meth:`commit` stores it.

    Used as a context manager: leaving the block without :meth:`commit` (or with an exception)
    deletes the temporary file. Get one from :meth:`BlobStore.writer`.
    """

    def __init__(
        self, store: BlobStore, expected: str | None, max_bytes: int, *, durable: bool = True
    ) -> None:
        self._store = store
        self._expected = expected
        self.max_bytes = max_bytes
        self.durable = durable
        self._hash = hashlib.sha256()
        self.size = 0
        fd, name = _mkstemp(store.tmp_dir)
        self._tmp = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=CHUNK_BYTES)
        self.digest: str | None = None

    def write(self, chunk: bytes | memoryview) -> None:
        """Append ``chunk``; :class:`BlobTooLarge` once the size limit is passed."""
        self.size += len(chunk)
        if self.size > self.max_bytes:
            if self.max_bytes < self._store.max_blob_bytes:  # the caller's limit for this blob
                raise BlobTooLarge(
                    f"The blob exceeds the size limit of {self.max_bytes} bytes for this kind "
                    "of blob; no valid one is larger."
                )
            raise BlobTooLarge(
                f"The blob exceeds the size limit of {self.max_bytes} bytes; raise "
                "[store] max_blob_bytes if such blobs are expected."
            )
        self._hash.update(chunk)
        self._file.write(chunk)

    def commit(self) -> str:
        """Check the hash, fsync (when durable) and rename into place; returns the digest."""
        digest = self._hash.hexdigest()
        if self._expected is not None and digest != self._expected:
            raise HashMismatch(
                f"The received bytes hash to {digest}, not to the requested {self._expected}."
            )
        self._file.flush()
        if self.durable:
            os.fsync(self._file.fileno())
        self._file.close()
        target = self._store.path(digest)
        target.parent.mkdir(exist_ok=True)
        os.replace(self._tmp, target)
        if self.durable:
            _fsync_dir(target.parent)
        self.digest = digest
        self._store.checked(digest)
        return digest

    def abort(self) -> None:
        """Drop the temporary file (a no-op after :meth:`commit`)."""
        if not self._file.closed:
            self._file.close()
        if self.digest is None:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()


class BlobStore:
    """Blobs under ``root``, each named by its SHA-256; see the module docstring for the layout."""

    def __init__(
        self,
        root: Path,
        *,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        recheck_seconds: float = DEFAULT_RECHECK_SECONDS,
    ) -> None:
        self.root = Path(root)
        self.max_blob_bytes = max_blob_bytes
        self.recheck_seconds = recheck_seconds
        # digest -> (inode, size, mtime in ns, time.monotonic()) of the file when it was hashed
        self._checked: dict[str, tuple[int, int, int, float]] = {}
        self.tmp_dir = self.root / "tmp"
        self.quarantine_dir = self.root / "quarantine"
        try:
            for folder in (self.root, self.tmp_dir, self.quarantine_dir):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"Cannot create the blob store at {self.root}: {exc}.") from exc

    def path(self, digest: str) -> Path:
        """Where blob ``digest`` lives (whether or not it is there)."""
        check_digest(digest)
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        """Whether blob ``digest`` is stored (its bytes are checked only when read)."""
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        """Size in bytes of a stored blob; :class:`BlobNotFound` when missing."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise self._not_found(digest) from None

    def writer(
        self, expected: str | None = None, *, max_bytes: int | None = None, durable: bool = True
    ) -> BlobWriter:
        """A :class:`BlobWriter`; when ``expected`` is given the bytes must hash to it.

        ``durable=False`` skips the fsyncs, for copies that can be fetched again (blobs from
        peers): a copy torn by a crash fails its hash check on the next read, is quarantined and
        fetched again, and the round does not wait for the disk.
        """
        if expected is not None:
            check_digest(expected)
        limit = self.max_blob_bytes if max_bytes is None else min(max_bytes, self.max_blob_bytes)
        return BlobWriter(self, expected, limit, durable=durable)

    def put_bytes(self, data: bytes, *, expected: str | None = None) -> str:
        """Store ``data``; returns its digest."""
        return self.put_chunks([data], expected=expected)

    def put_chunks(self, chunks: Iterable[bytes], *, expected: str | None = None) -> str:
        """Store the concatenation of ``chunks``; returns its digest."""
        with self.writer(expected) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    def put_file(self, source: Path, *, expected: str | None = None) -> str:
        """Copy the file ``source`` into the store; returns its digest."""
        with open(source, "rb") as f:
            return self.put_chunks(iter(lambda: f.read(CHUNK_BYTES), b""), expected=expected)

    def iter_verified(self, digest: str, *, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """Yield a stored blob's bytes in chunks of ``chunk_bytes``, checking the hash at the end.

        A mismatch quarantines the blob and raises :class:`HashMismatch` after the last chunk, so
        a consumer must not act on the bytes before the iterator is exhausted.
        """
        path = self.path(digest)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below; the open itself may fail
        except FileNotFoundError:
            raise self._not_found(digest) from None
        hasher = hashlib.sha256()
        with f:
            while chunk := f.read(chunk_bytes):
                hasher.update(chunk)
                yield chunk
        if hasher.hexdigest() != digest:
            raise self._corrupted(digest, hasher.hexdigest())
        self.checked(digest)

    def map_verified(self, digest: str) -> mmap.mmap | bytes:
        """A stored blob as a private, writable memory map of its file, hash-checked first
        (a mismatch quarantines it, as :meth:`iter_verified` does); ``b""`` for an empty blob.

        Nothing is copied: the pages are the file's in the page cache, and a write to the map
        changes the map only (copy on write), never the file. The store never rewrites a
        blob's file in place (it renames new files into place), so the map stays valid even
        if the blob is deleted meanwhile.
        """
        try:
            f = open(self.path(digest), "rb")  # noqa: SIM115 - closed below; may fail
        except FileNotFoundError:
            raise self._not_found(digest) from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                mapped: mmap.mmap | bytes = b""
                actual = hashlib.sha256(b"").hexdigest()
            else:
                mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
                actual = hashlib.sha256(mapped).hexdigest()
        if actual != digest:
            if isinstance(mapped, mmap.mmap):
                mapped.close()
            raise self._corrupted(digest, actual)
        self.checked(digest)
        return mapped

    def read_bytes(self, digest: str) -> bytes:
        """A stored blob's bytes, hash-checked (see :meth:`iter_verified`)."""
        return b"".join(self.iter_verified(digest))

    def verify(self, digest: str) -> bool:
        """Hash a stored blob; False (and quarantined) when corrupted, BlobNotFound if missing."""
        try:
            for _ in self.iter_verified(digest):
                pass
        except HashMismatch:
            return False
        return True

    def delete(self, digest: str) -> bool:
        """Remove a blob; False when it was not there."""
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def digests(self) -> Iterator[str]:
        """Every stored blob's digest (unordered)."""
        for folder in self.root.iterdir():
            if len(folder.name) == 2 and folder.is_dir():
                for entry in folder.iterdir():
                    if _DIGEST.match(entry.name) and entry.name.startswith(folder.name):
                        yield entry.name

    def gc(self, keep: set[str], *, grace_seconds: float = DEFAULT_GC_GRACE_SECONDS) -> list[str]:
        """Delete blobs not in ``keep`` and older than ``grace_seconds``, and stale temporaries.

        Returns the deleted digests. The grace period protects a blob that was just written and
        is about to be pinned.
        """
        cutoff = time.time() - grace_seconds
        removed = []
        for digest in list(self.digests()):
            path = self.path(digest)
            if digest not in keep and _mtime(path) < cutoff and self.delete(digest):
                removed.append(digest)
        for tmp in self.tmp_dir.iterdir():
            if _mtime(tmp) < cutoff:
                tmp.unlink(missing_ok=True)
        return removed

    def checked(self, digest: str) -> None:
        """Note that this process just hashed blob ``digest``'s file and found it right."""
        try:
            st = self.path(digest).stat()
        except FileNotFoundError:
            return
        self._checked[digest] = (st.st_ino, st.st_size, st.st_mtime_ns, time.monotonic())

    def checked_lately(self, digest: str) -> bool:
        """Whether this process hashed blob ``digest`` within ``recheck_seconds`` and its file
        is still the one it hashed (same inode, size and modification time)."""
        seen = self._checked.get(digest)
        if seen is None:
            return False
        try:
            st = self.path(digest).stat()
        except FileNotFoundError:
            return False
        fresh = time.monotonic() - seen[3] < self.recheck_seconds
        return fresh and seen[:3] == (st.st_ino, st.st_size, st.st_mtime_ns)

    def quarantine(self, digest: str, actual: str) -> HashMismatch:
        """Move blob ``digest``, found to hash to ``actual``, to ``quarantine/``; the error to
        report (raise or log) says where it went."""
        return self._corrupted(digest, actual)

    def _not_found(self, digest: str) -> BlobNotFound:
        self._checked.pop(digest, None)
        return BlobNotFound(f"Blob {digest} is not in this store; fetch it from a peer first.")

    def _corrupted(self, digest: str, actual: str) -> HashMismatch:
        self._checked.pop(digest, None)
        target = self.quarantine_dir / f"{digest}.{int(time.time() * 1000)}"
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path(digest), target)
        return HashMismatch(
            f"Blob {digest} is corrupted on disk (its bytes hash to {actual}); it was moved to "
            f"{target} and must be fetched again from a peer."
        )


def _mkstemp(folder: Path) -> tuple[int, str]:
    return tempfile.mkstemp(dir=folder, prefix="blob-", suffix=".part")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
