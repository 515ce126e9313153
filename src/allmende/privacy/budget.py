"""The privacy ledger: ε spent per declared dataset, across all jobs, in the node's SQLite state.

One row per contribution: (dataset, job, round) and the ε the job has spent on the dataset after
it. A job's spend is its latest row's ε (the accountant composes a job's rounds tightly); the
dataset's spend is the sum over its jobs (basic composition across jobs, and their δ add up).

A contribution is *charged* -- its row committed with ``synchronous=FULL``, so it survives a
crash and a power loss -- before the update leaves the node. A crash after the charge and
before the send leaves ε recorded and unspent, never the other way round; charging the same
(dataset, job, round) again is a no-op, so a restarted node that sends the round's update after
all is not charged twice.

The ledger opens its own connection to the state database (the same file as
:class:`~allmende.store.state.StateDB`), so its commits are fully synced whatever the rest of
the node's state does.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from allmende.errors import PrivacyError

BUSY_TIMEOUT_SECONDS = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS privacy_charges (
    dataset TEXT NOT NULL,
    job TEXT NOT NULL,
    round INTEGER NOT NULL,
    job_epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (dataset, job, round)
);
"""


@dataclass(frozen=True)
class JobSpend:
    job: str
    contributions: int
    epsilon: float
    delta: float


@dataclass(frozen=True)
class DatasetSpend:
    """What one declared dataset has spent, over all its jobs."""

    dataset: str
    epsilon: float
    delta: float
    jobs: tuple[JobSpend, ...]


class PrivacyLedger:
    """The ε charged per dataset; open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._conn = connection
        self._lock = threading.Lock()
        self.path = path

    @classmethod
    def open(cls, path: Path) -> PrivacyLedger:
        """Open the ledger in the state database at ``path`` (created if needed)."""
        try:
            conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise PrivacyError(
                f"Cannot open the privacy ledger in {path}: {exc}. Check the file and its "
                "permissions; the node sends no private update without it."
            ) from None
        return cls(conn, path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def charge(
        self,
        dataset: str,
        job: str,
        round_: int,
        *,
        job_epsilon: float,
        delta: float,
        budget: float | None = None,
    ) -> bool:
        """Record that ``job`` used ``dataset`` in ``round_``, after which the job has spent
        ``job_epsilon``; durable when this returns. False when that round was charged already
        (nothing changes). With a ``budget``, :class:`PrivacyError` instead of a charge that
        would take the dataset's total over it; the check and the charge are one transaction,
        so two jobs charging at once cannot both pass it."""
        if not (math.isfinite(job_epsilon) and job_epsilon >= 0):
            raise PrivacyError(f"refusing to charge a non-finite or negative ε ({job_epsilon})")
        try:
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    done = self._conn.execute(
                        "SELECT 1 FROM privacy_charges WHERE dataset = ? AND job = ? AND round = ?",
                        (dataset, job, round_),
                    ).fetchone()
                    if done is not None:
                        self._conn.execute("ROLLBACK")
                        return False
                    if budget is not None:
                        total = _total(self._conn, dataset, replacing=(job, job_epsilon))
                        if total > budget + 1e-12:
                            raise PrivacyError(
                                f"Charging job {job} round {round_} would bring {dataset} to "
                                f"ε {total:.4g}, over the budget {budget:g}; the update is "
                                "not sent."
                            )
                    self._conn.execute(
                        "INSERT INTO privacy_charges "
                        "(dataset, job, round, job_epsilon, delta, at) VALUES (?, ?, ?, ?, ?, ?)",
                        (dataset, job, round_, job_epsilon, delta, time.time()),
                    )
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
                return True
        except sqlite3.Error as exc:
            raise PrivacyError(
                f"Cannot record the privacy charge for job {job} round {round_}: {exc}; the "
                "update is not sent."
            ) from None

    def charged(self, dataset: str, job: str, round_: int) -> bool:
        """Whether ``job``'s round ``round_`` was charged to ``dataset``."""
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM privacy_charges WHERE dataset = ? AND job = ? AND round = ?",
                (dataset, job, round_),
            ).fetchone()
        return row is not None

    def job_spend(self, dataset: str, job: str) -> JobSpend:
        """How many rounds of ``job`` used ``dataset``, and the ε the job has spent on it."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT job_epsilon, delta FROM privacy_charges WHERE dataset = ? AND job = ? "
                "ORDER BY round",
                (dataset, job),
            ).fetchall()
        if not rows:
            return JobSpend(job, 0, 0.0, 0.0)
        return JobSpend(job, len(rows), max(row[0] for row in rows), max(row[1] for row in rows))

    def spent(self, dataset: str) -> float:
        """ε ``dataset`` has spent over all jobs (the sum of each job's spend)."""
        return self.dataset_spend(dataset).epsilon

    def dataset_spend(self, dataset: str) -> DatasetSpend:
        with self._lock:
            names = [
                row[0]
                for row in self._conn.execute(
                    "SELECT DISTINCT job FROM privacy_charges WHERE dataset = ? ORDER BY job",
                    (dataset,),
                )
            ]
        jobs = tuple(self.job_spend(dataset, name) for name in names)
        return DatasetSpend(
            dataset,
            math.fsum(job.epsilon for job in jobs),
            math.fsum(job.delta for job in jobs),
            jobs,
        )

    def datasets(self) -> list[DatasetSpend]:
        """Every dataset charged so far, sorted by name."""
        with self._lock:
            names = [
                row[0]
                for row in self._conn.execute(
                    "SELECT DISTINCT dataset FROM privacy_charges ORDER BY dataset"
                )
            ]
        return [self.dataset_spend(name) for name in names]


def _total(conn: sqlite3.Connection, dataset: str, *, replacing: tuple[str, float]) -> float:
    """The dataset's ε with ``replacing``'s job spending the given ε."""
    job, epsilon = replacing
    rows = conn.execute(
        "SELECT job, MAX(job_epsilon) FROM privacy_charges WHERE dataset = ? GROUP BY job",
        (dataset,),
    ).fetchall()
    spends = {name: value for name, value in rows}
    spends[job] = max(epsilon, spends.get(job, 0.0))
    return math.fsum(spends.values())
