"""The node's Ethereum key: an encrypted keystore (eth-account, scrypt), or plaintext on devnets.

``eth_account`` is imported only to create or decrypt a keystore; a node signs with the
:class:`~allmende.chain.keys.LocalKey` it gets back.

The password comes from an environment variable (``[node] password_env``, default
``ALLMENDE_KEY_PASSWORD``) or, when that is unset and a terminal is attached, from a prompt. A
plaintext key file is allowed only for devnet chain ids (:data:`DEVNET_CHAIN_IDS`), where the
stakes are play money; the node refuses to start with one against any other chain.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from allmende.chain.addresses import address_of_key
from allmende.chain.keys import LocalKey
from allmende.errors import ConfigError, NodeError
from allmende.node.config import DEVNET_CHAIN_IDS

PLAINTEXT_MARKER = "allmende-insecure-plaintext-key"
MIN_PASSWORD_LENGTH = 8

PasswordPrompt = Callable[[], str]


def create_key(
    path: Path,
    *,
    password: str | None,
    plaintext: bool = False,
    chain_id: int,
    private_key: str | None = None,
) -> str:
    """Create (or import ``private_key`` into) a key file at ``path``; returns its address.

    With ``plaintext`` the key is stored unencrypted, which only a devnet chain id allows.
    """
    if path.exists():
        raise NodeError(f"A key file already exists at {path}; refusing to overwrite it.")
    if private_key is None:
        key = secrets.token_bytes(32)
    else:
        try:
            key = bytes.fromhex(private_key.removeprefix("0x"))
        except ValueError:
            raise ConfigError("The private key to import is not hex.") from None
    try:
        address = address_of_key(key)
    except ValueError as exc:
        raise ConfigError(f"The private key to import is not a valid key: {exc}.") from None
    if plaintext:
        _require_devnet(chain_id)
        document: dict[str, Any] = {
            PLAINTEXT_MARKER: True,
            "address": address,
            "private_key": "0x" + key.hex(),
        }
    else:
        if password is None or len(password) < MIN_PASSWORD_LENGTH:
            raise ConfigError(
                f"The key password must have at least {MIN_PASSWORD_LENGTH} characters; set a "
                "longer one (or use --insecure-plaintext-key on a devnet)."
            )
        from eth_account import Account  # scrypt keystore; only here and when loading one

        document = Account.encrypt(key, password)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(document, f, indent=2)
    return address


def is_plaintext(path: Path) -> bool:
    """Whether the key file at ``path`` holds an unencrypted key."""
    return bool(_read(path).get(PLAINTEXT_MARKER))


def load_key(
    path: Path,
    *,
    chain_id: int,
    password_env: str,
    prompt: PasswordPrompt | None = None,
) -> LocalKey:
    """The node's key from its key file; decrypts with the env password or ``prompt``."""
    document = _read(path)
    if document.get(PLAINTEXT_MARKER):
        _require_devnet(chain_id)
        try:
            return LocalKey.from_key(str(document.get("private_key")))
        except ValueError as exc:
            raise ConfigError(f"The node key file {path} holds no valid key: {exc}.") from None
    password = os.environ.get(password_env)
    if password is None:
        if prompt is None:
            raise ConfigError(
                f"The node key {path} is encrypted; set ${password_env} to its password."
            )
        password = prompt()
    from eth_account import Account  # scrypt keystore: only an encrypted key needs it

    try:
        key = Account.decrypt(document, password)
    except ValueError:
        raise ConfigError(
            f"The password does not decrypt the node key {path}; check ${password_env}."
        ) from None
    return LocalKey.from_key(bytes(key))


def key_address(path: Path) -> str:
    """The address of the key file at ``path``, without its password (both kinds of key file
    name it)."""
    raw = _read(path).get("address")
    if not isinstance(raw, str) or len(raw.removeprefix("0x")) != 40:
        raise ConfigError(f"The node key file {path} names no address; it is not a node key.")
    from eth_utils import to_checksum_address

    return str(to_checksum_address("0x" + raw.removeprefix("0x")))


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"No node key at {path}; create the node home with `allmende node init`."
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"The node key file {path} is unreadable: {exc}.") from None
    if not isinstance(document, dict):
        raise ConfigError(f"The node key file {path} is not a keystore.")
    return document


def _require_devnet(chain_id: int) -> None:
    if chain_id not in DEVNET_CHAIN_IDS:
        raise ConfigError(
            f"A plaintext key is allowed only on a devnet (chain ids {sorted(DEVNET_CHAIN_IDS)}), "
            f"not on chain {chain_id}; create an encrypted key with a password instead."
        )
