"""The node's SQLite state: pins, peer faults, nonces, key-value, own tables."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from allmende.errors import StoreError
from allmende.store.state import StateDB


@pytest.fixture
def db(tmp_path: Path):
    state = StateDB.open(tmp_path / "state.sqlite")
    yield state
    state.close()


def test_pins_are_reference_counted_by_ref(db: StateDB) -> None:
    db.pin("a" * 64, "job:1")
    db.pin("a" * 64, "job:2")
    db.pin("a" * 64, "job:2")  # idempotent
    db.pin("b" * 64, "job:2")
    assert db.pinned() == {"a" * 64, "b" * 64}
    assert db.refs("a" * 64) == ["job:1", "job:2"]
    db.unpin("a" * 64, "job:1")
    assert db.refs("a" * 64) == ["job:2"]
    assert db.unpin_ref("job:2") == 2
    assert db.pinned() == set()


def test_peer_faults_are_recorded_per_peer(db: StateDB) -> None:
    db.record_peer_fault("http://p1", "hash", "served wrong bytes")
    db.record_peer_fault("http://p2", "http", "status 500")
    assert [f.kind for f in db.peer_faults()] == ["hash", "http"]
    faults = db.peer_faults("http://p1")
    assert len(faults) == 1 and faults[0].detail == "served wrong bytes"
    assert db.peer_faults("http://unknown") == []


def test_a_nonce_is_accepted_once_per_sender(db: StateDB) -> None:
    assert db.remember_nonce("0xAbC", 5, expiry=100)
    assert not db.remember_nonce("0xabc", 5, expiry=100)  # same sender, case-insensitive
    assert db.remember_nonce("0xdef", 5, expiry=100)
    assert db.forget_expired_nonces(now=101) == 2
    assert db.remember_nonce("0xabc", 5, expiry=200)


def test_huge_nonces_are_stored_exactly(db: StateDB) -> None:
    nonce = 2**255 + 1
    assert db.remember_nonce("0x1", nonce, expiry=1)
    assert not db.remember_nonce("0x1", nonce, expiry=1)
    assert db.remember_nonce("0x1", nonce + 1, expiry=1)


def test_key_values_persist_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    first = StateDB.open(path)
    assert first.get("last_block") is None
    assert first.get("last_block", "0") == "0"
    first.set("last_block", "10")
    first.set("last_block", "11")
    first.close()
    second = StateDB.open(path)
    assert second.get("last_block") == "11"
    second.close()


def test_roles_can_add_tables_and_a_failed_transaction_rolls_back(db: StateDB) -> None:
    db.ensure_schema("CREATE TABLE IF NOT EXISTS rounds (job INTEGER, round INTEGER)")
    with db.transaction() as conn:
        conn.execute("INSERT INTO rounds VALUES (1, 0)")
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("INSERT INTO rounds VALUES (1, 1)")
        raise RuntimeError("boom")
    with db.transaction() as conn:
        assert conn.execute("SELECT COUNT(*) FROM rounds").fetchone()[0] == 1


def test_concurrent_threads_do_not_lose_writes(db: StateDB) -> None:
    def work(k: int) -> None:
        for i in range(50):
            db.pin(f"{k:02d}{i:062d}", "t")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(db.pinned()) == 200


def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="Cannot open"):
        StateDB.open(tmp_path / "missing-dir" / "state.sqlite")
