"""Sending a large blob with ``sendfile``: the kernel copies the file to the socket.

A full ``GET`` of a blob larger than one serving piece is the bulk of a round's bytes (a 200 MB
model or update). Streamed through the ASGI stack it costs a read, a Python call and a socket
write per 64 KiB piece. Here one worker thread reads each :data:`PIECE_BYTES` piece into one
reusable buffer (small enough to stay in the processor's cache; the node holds no copy of the
blob) to hash it, and hands the piece to ``os.sendfile``, which copies it from the page cache
to the socket without passing through Python. The bytes sent are hashed exactly as the
streamed path hashes them, so a blob that rotted on disk is still noticed (and quarantined by
the caller), unless the node hashed the blob itself lately (it wrote it, or read it whole:
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
    :attr:`SendOutcome.digest` stays None); runs in a worker thread."""
    fd = os.dup(sock_fd)
    sent = 0
    try:
        with open(path, "rb", buffering=0) as f:
            buffer = bytearray(PIECE_BYTES)
            view = memoryview(buffer)
            hasher = hashlib.sha256()
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            while sent < size:
                count = min(PIECE_BYTES, size - sent)
                if verify:
                    count = os.preadv(f.fileno(), [view[:count]], sent)
                    if count == 0:
                        return SendOutcome(sent, None, "the file ended before the blob did")
                    hasher.update(view[:count])  # releases the GIL while it hashes
                failure = _send_range(fd, f.fileno(), sent, sent + count, poller, stall_seconds,
                                      stop)  # fmt: skip
                if failure is not None:
                    return SendOutcome(sent + failure[0], None, failure[1])
                sent += count
            return SendOutcome(sent, hasher.hexdigest() if verify else None, None)
    except OSError as exc:  # the file vanished: nothing more is sent
        return SendOutcome(sent, None, f"{type(exc).__name__}: {exc}")
    finally:
        os.close(fd)


def _send_range(
    fd: int,
    file_fd: int,
    start: int,
    end: int,
    poller: select.poll,
    stall_seconds: float,
    stop: threading.Event,
) -> tuple[int, str] | None:
    """Bytes ``[start, end)`` of the file to the socket; None when all went, else (bytes of the
    range that went, why it stopped)."""
    offset = start
    idle_since = time.monotonic()
    while offset < end:
        if stop.is_set():
            return offset - start, "the connection was closed"
        try:
            count = os.sendfile(fd, file_fd, offset, end - offset)
        except BlockingIOError:
            events = poller.poll(TICK_SECONDS * 1000)
            if any(flags & (select.POLLERR | select.POLLHUP | select.POLLNVAL)
                   for _, flags in events):  # fmt: skip
                return offset - start, "the peer closed the connection"
            if not events and time.monotonic() - idle_since >= stall_seconds:
                return offset - start, f"the peer read nothing for {stall_seconds:g} s"
            continue
        except OSError as exc:  # reset or broken pipe: the peer left
            return offset - start, f"{type(exc).__name__}: {exc}"
        if count == 0:
            return offset - start, "the file ended before the blob did"
        offset += count
        idle_since = time.monotonic()
    return None
