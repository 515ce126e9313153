"""Creating a node home: its key, ``node.toml``, and an empty blob store and state database.

``allmende node init`` builds the settings from its options and calls :func:`create_home`; a
program that sets up many nodes (a benchmark, a test network) calls it directly.
"""

from __future__ import annotations

from pathlib import Path

from allmende.errors import NodeError
from allmende.node.config import BLOBS_DIR, CONFIG_FILE, NodeConfig, resolve, write_config
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
    data = resolve(home, config.node.data_dir)
    BlobStore(data / BLOBS_DIR)
    StateDB.open(data / STATE_FILE).close()
    return address
