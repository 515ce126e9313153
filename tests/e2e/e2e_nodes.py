"""Node homes for the end-to-end tests: `allmende node init` with patience, plus config edits."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

from nodes import allmende, free_port

from allmende.node.config import parse_config, write_config

CLI_TIMEOUT = 600.0  # a CLI call imports torch; on a loaded machine that alone takes minutes
KEY_ENV = "E2E_NODE_KEY"


def init_node(
    home: Path,
    *,
    deployment: Path,
    key: str,
    roles: Sequence[str],
    stake_wei: int = 0,
    sections: dict[str, dict[str, object]] | None = None,
    allow_tasks: Sequence[str] = ("digits-mlp",),
) -> Path:
    """`allmende node init` a devnet home importing ``key``, its trainer allowing
    ``allow_tasks``, then merge ``sections`` into its ``node.toml`` as an operator editing it
    would."""
    allowed = [arg for task in allow_tasks for arg in ("--allow-task", task)]
    result = allmende(
        "node", "init", str(home), "--insecure-plaintext-key",
        "--port", str(free_port()), "--roles", ",".join(roles),
        "--stake-wei", str(stake_wei), "--deployment", str(deployment),
        "--import-key-env", KEY_ENV, *allowed,
        env={KEY_ENV: key}, timeout=CLI_TIMEOUT,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"node init failed ({result.returncode}): {result.stderr}")
    if sections:
        raw = tomllib.loads((home / "node.toml").read_text())
        for name, values in sections.items():
            raw[name] = {**raw.get(name, {}), **values}
        write_config(home, parse_config(raw))
    return home
