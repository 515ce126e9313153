"""A node home: a directory with the node's key, ``node.toml``, blob store and state database.

``allmende node init`` builds the settings from its options and calls :func:`create_home`; a
program that sets up many nodes (a benchmark, a test network) calls it directly. Every command
that works on a home opens its store and state through :func:`open_store` and
:func:`open_state`, and ``allmende node run`` holds :func:`home_lock` while it runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from allmende.errors import NodeError
from allmende.node.config import (
    BLOBS_DIR,
    CONFIG_FILE,
    NodeConfig,
    load_config,
    resolve,
    write_config,
)
from allmende.node.keystore import create_key
from allmende.store.blobs import BlobStore
from allmende.store.state import STATE_FILE, StateDB


def create_home(
    home: Path,
    config: NodeConfig,
    *,
    chain_id: int,
    password: str | None,
    plaintext: bool = False,
    private_key: str | None = None,
) -> str:
    """Create the node home ``home`` with ``config``; the node's address.

    The key is new, or ``private_key`` (hex) imported; it is encrypted with ``password``, or
    stored in plaintext when ``plaintext`` is set, which only a devnet ``chain_id`` allows.
    Refuses a directory that already holds a node.
    """
    if (home / CONFIG_FILE).exists():
        raise NodeError(f"{home} already holds a node ({CONFIG_FILE}); pick another directory.")
    home.mkdir(parents=True, exist_ok=True)
    address = create_key(
        resolve(home, config.node.key_file),
        password=password,
        plaintext=plaintext,
        chain_id=chain_id,
        private_key=private_key,
    )
    write_config(home, config)
    open_store(home, config)
    open_state(home, config).close()
    return address


LOCK_FILE = "node.lock"


def open_store(home: Path, config: NodeConfig | None = None) -> BlobStore:
    """The blob store of the node at ``home`` (its ``node.toml`` is read unless given)."""
    config = config or load_config(home)
    return BlobStore(
        resolve(home, config.node.data_dir) / BLOBS_DIR,
        max_blob_bytes=config.store.max_blob_bytes,
    )


def open_state(home: Path, config: NodeConfig | None = None) -> StateDB:
    """The state database of the node at ``home``; close it when done."""
    config = config or load_config(home)
    return StateDB.open(resolve(home, config.node.data_dir) / STATE_FILE)


@contextlib.contextmanager
def home_lock(home: Path) -> Iterator[IO[str]]:
    """Hold an exclusive OS lock on ``<home>/node.lock``; :class:`NodeError` if another has it."""
    path = Path(home) / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115 - held for the whole block, closed below
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise NodeError(
                f"Another `allmende node run` (pid {holder}) is already using the node home "
                f"{home}; stop it first, or give this node its own home."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield handle
    finally:
        handle.close()
