"""The node's SQLite state: blob pins, peer faults, seen message nonces, a key-value table.

One file per node home (``state.sqlite``), in WAL mode so ``allmende node gc`` can read it while
the node runs. Every method is safe to call from several threads (one lock around one connection);
calls are short, so the asyncio node calls them directly.

Roles add their own tables with :meth:`StateDB.ensure_schema` and use :meth:`StateDB.transaction`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from allmende.errors import StoreError

STATE_FILE = "state.sqlite"
# Wait this long for another process (e.g. `node gc`) holding the write lock.
BUSY_TIMEOUT_SECONDS = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pins (
    digest TEXT NOT NULL,
    ref TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (digest, ref)
);
CREATE TABLE IF NOT EXISTS peer_faults (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS peer_faults_peer ON peer_faults (peer);
CREATE TABLE IF NOT EXISTS seen_messages (
    sender TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expiry INTEGER NOT NULL,
    PRIMARY KEY (sender, nonce)
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class PeerFault:
    """One recorded misbehaviour of a peer (``kind``: ``"hash"``, ``"size"``, ``"http"``, ...)."""

    peer: str
    kind: str
    detail: str
    at: float


class StateDB:
    """The node's SQLite database; open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._conn = connection
        self._lock = threading.RLock()
        self.path = path

    @classmethod
    def open(cls, path: Path) -> StateDB:
        """Open (creating if needed) the state database at ``path``."""
        try:
            conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(
                f"Cannot open the node state database {path}: {exc}. Check the path and its "
                "permissions, or restore the file from a backup."
            ) from exc
        return cls(conn, path)

    def close(self) -> None:
        """Close the connection; the object is unusable afterwards."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on an exception)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"The node state database is unavailable: {exc}.") from exc
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def ensure_schema(self, sql: str) -> None:
        """Run ``CREATE ... IF NOT EXISTS`` statements (for roles that keep their own tables)."""
        with self._lock:
            self._conn.executescript(sql)

    # -- pins: which blobs something still needs ------------------------------------------------

    def pin(self, digest: str, ref: str) -> None:
        """Record that ``ref`` (e.g. ``"job:3"``, ``"local"``) needs blob ``digest``."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO pins (digest, ref, created) VALUES (?, ?, ?)",
                (digest, ref, time.time()),
            )

    def unpin(self, digest: str, ref: str) -> None:
        """Drop one reference; the blob becomes collectable when none is left."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM pins WHERE digest = ? AND ref = ?", (digest, ref))

    def unpin_ref(self, ref: str) -> int:
        """Drop every pin held by ``ref`` (e.g. when a job ends); returns how many."""
        with self.transaction() as conn:
            return conn.execute("DELETE FROM pins WHERE ref = ?", (ref,)).rowcount

    def pinned(self) -> set[str]:
        """Every digest with at least one reference."""
        with self._lock:
            return {row[0] for row in self._conn.execute("SELECT DISTINCT digest FROM pins")}

    def refs(self, digest: str) -> list[str]:
        """The references that hold ``digest``, sorted."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT ref FROM pins WHERE digest = ? ORDER BY ref", (digest,)
            ).fetchall()
        return [row[0] for row in rows]

    # -- peers that served something wrong --------------------------------------------------------

    def record_peer_fault(self, peer: str, kind: str, detail: str) -> None:
        """Remember that ``peer`` (its URL or address) misbehaved."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO peer_faults (peer, kind, detail, at) VALUES (?, ?, ?, ?)",
                (peer, kind, detail, time.time()),
            )

    def peer_faults(self, peer: str | None = None) -> list[PeerFault]:
        """Recorded faults, oldest first; only ``peer``'s when given."""
        query = "SELECT peer, kind, detail, at FROM peer_faults"
        args: tuple[str, ...] = ()
        if peer is not None:
            query += " WHERE peer = ?"
            args = (peer,)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY id", args).fetchall()
        return [PeerFault(*row) for row in rows]

    # -- message nonces (replay protection) -------------------------------------------------------

    def remember_nonce(self, sender: str, nonce: int, expiry: int) -> bool:
        """Record ``(sender, nonce)``; False when it was already seen (a replay)."""
        try:
            with self.transaction() as conn:
                conn.execute(
                    "INSERT INTO seen_messages (sender, nonce, expiry) VALUES (?, ?, ?)",
                    (sender.lower(), str(nonce), expiry),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def forget_expired_nonces(self, now: float) -> int:
        """Drop nonces of messages that expired before ``now`` (they are refused anyway)."""
        with self.transaction() as conn:
            return conn.execute("DELETE FROM seen_messages WHERE expiry < ?", (int(now),)).rowcount

    # -- small values (schema version, last seen block, ...) ------------------------------------

    def get(self, key: str, default: str | None = None) -> str | None:
        """The stored value of ``key``, or ``default``."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
