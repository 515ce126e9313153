"""Where the project's own files live: contract sources, the local Anvil, caches."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def project_root() -> Path | None:
    """The source checkout this package runs from (editable install), or None when installed."""
    root = _PACKAGE.parent.parent
    if (root / "pyproject.toml").is_file() and (root / "contracts").is_dir():
        return root
    return None


def contracts_dir() -> Path:
    """The Vyper sources: ``contracts/`` of the checkout, or the copy shipped in the wheel."""
    shipped = _PACKAGE / "_contracts"
    if shipped.is_dir():
        return shipped
    root = project_root()
    if root is None:
        raise FileNotFoundError("The contract sources are missing from this installation.")
    return root / "contracts"


def cache_dir() -> Path:
    """Cache for compiled contracts and the like; ``$ALLMENDE_CACHE`` overrides it."""
    env = os.environ.get("ALLMENDE_CACHE")
    if env:
        path = Path(env)
    else:
        root = project_root()
        path = root / ".cache" if root else Path.home() / ".cache" / "allmende"
    path.mkdir(parents=True, exist_ok=True)
    return path
