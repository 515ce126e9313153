"""Sending a large blob with ``sendfile``: the kernel copies the file to the socket.

A full ``GET`` of a blob larger than one serving piece is the bulk of a round's bytes (a 200 MB
model or update). Streamed through the ASGI stack it costs a read, a Python call and a socket
write per 64 KiB piece. Here one worker thread hands the file to ``os.sendfile`` a
:data:`PIECE_BYTES` piece at a time, which copies it from the page cache to the socket without
passing through Python, and hashes the file, reading it piece by piece into one reusable buffer
(small enough to stay in the processor's cache; the node holds no copy of the blob), whenever
the socket is full, and the rest after the last byte went: the peer never waits for the hash.
A blob that rotted on disk is so still noticed (and quarantined by the caller), as the streamed
path notices it, unless the node hashed the blob itself lately (it wrote it, or read it whole:
:meth:`~allmende.store.blobs.BlobStore.checked_lately`); then the kernel alone moves the bytes.
The receiver checks the hash itself either way.

The thread works on its own duplicate of the socket's descriptor, so closing the connection on
the event loop can never make it write into another connection that reuses the number. It
gives up when the peer reads nothing for ``stall_seconds`` (the node's send timeout), when the
connection breaks, or when ``stop`` is set (the connection was lost, or the node is stopping);
:func:`send_blob` then returns the bytes sent so far and the caller aborts the connection.
"""

from __future__ import annotations

import hashlib
import os
import select
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# Read and hashed, then sent, this much at a time: few Python steps per blob, and a buffer that
# stays in the processor's cache.
PIECE_BYTES = 1024 * 1024
# How often a waiting thread looks at its stop flag.
TICK_SECONDS = 0.25


@dataclass
class SendOutcome:
    """What :func:`send_blob` did: bytes sent, their SHA-256 (hex) when all were sent, and why
    it stopped early (None when it did not)."""

    sent: int
    digest: str | None
    failure: str | None


def send_blob(
    sock_fd: int,
    path: Path,
    size: int,
    *,
    stall_seconds: float,
    stop: threading.Event,
    verify: bool = True,
) -> SendOutcome:
    """Send the first ``size`` bytes of ``path`` to the socket ``sock_fd`` (non-blocking; a
    duplicate is used and closed here), hashing them when ``verify`` (else
    :attr:`SendOutcome.digest` stays None); runs in a worker thread.

    Sending comes first: the file is hashed piece by piece whenever the socket is full (while
    the peer drains it), and what is left once every byte went. The hash is of the file's
    bytes, as ``sendfile`` sends them; the store never rewrites a blob's file in place."""
    fd = os.dup(sock_fd)
    try:
        with open(path, "rb", buffering=0) as f:
            hasher = _FileHasher(f.fileno(), size) if verify else None
            sent, failure = _send(fd, f.fileno(), size, hasher, stall_seconds, stop)
            if failure is not None:
                return SendOutcome(sent, None, failure)
            if hasher is None:
                return SendOutcome(sent, None, None)
            while not hasher.done:
                if not hasher.step():
                    return SendOutcome(sent, None, "the file ended before the blob did")
            return SendOutcome(sent, hasher.hexdigest(), None)
    except OSError as exc:  # the file vanished: nothing more is sent
        return SendOutcome(0, None, f"{type(exc).__name__}: {exc}")
    finally:
        os.close(fd)


class _FileHasher:
    """SHA-256 of a file's first ``size`` bytes, a :data:`PIECE_BYTES` piece a step, read into
    one reusable buffer."""

    def __init__(self, file_fd: int, size: int) -> None:
        self.file_fd, self.size, self.hashed = file_fd, size, 0
        self._view = memoryview(bytearray(PIECE_BYTES))
        self._hash = hashlib.sha256()

    @property
    def done(self) -> bool:
        return self.hashed >= self.size

    def step(self) -> bool:
        """Hash the next piece; False when the file ended early."""
        want = min(PIECE_BYTES, self.size - self.hashed)
        count = os.preadv(self.file_fd, [self._view[:want]], self.hashed)
        if count == 0:
            return False
        self._hash.update(self._view[:count])  # releases the GIL while it hashes
        self.hashed += count
        return True

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _send(
    fd: int,
    file_fd: int,
    size: int,
    hasher: _FileHasher | None,
    stall_seconds: float,
    stop: threading.Event,
) -> tuple[int, str | None]:
    """The file's first ``size`` bytes to the socket: (bytes sent, None) when all went, else
    (bytes sent, why it stopped). A full socket gives the hasher a step, or else is waited on."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    offset = 0
    idle_since = time.monotonic()
    while offset < size:
        if stop.is_set():
            return offset, "the connection was closed"
        try:
            count = os.sendfile(fd, file_fd, offset, min(PIECE_BYTES, size - offset))
        except BlockingIOError:
            if hasher is not None and not hasher.done:
                if not hasher.step():
                    return offset, "the file ended before the blob did"
                events = poller.poll(0)
            else:
                events = poller.poll(TICK_SECONDS * 1000)
            if any(flags & (select.POLLERR | select.POLLHUP | select.POLLNVAL)
                   for _, flags in events):  # fmt: skip
                return offset, "the peer closed the connection"
            if not events and time.monotonic() - idle_since >= stall_seconds:
                return offset, f"the peer read nothing for {stall_seconds:g} s"
            continue
        except OSError as exc:  # reset or broken pipe: the peer left
            return offset, f"{type(exc).__name__}: {exc}"
        if count == 0:
            return offset, "the file ended before the blob did"
        offset += count
        idle_since = time.monotonic()
    return offset, None
