"""Compile the Vyper contracts in ``contracts/`` and cache the ABI and bytecode.

The cache key is the SHA-256 of every source file (contracts and interfaces, with their relative
paths) plus the compiler version, so editing any source or upgrading Vyper recompiles everything.
Compiled output lives under ``<cache>/contracts/<key>.json``; it is never committed or edited.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allmende import _paths
from allmende.errors import ChainError

SOURCE_SUFFIXES = (".vy", ".vyi")


@dataclass(frozen=True)
class CompiledContract:
    """One contract's ABI (JSON list) and deployable bytecode (``0x``-prefixed hex)."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str


def compile_contracts(
    *, source_dir: Path | None = None, cache_dir: Path | None = None
) -> dict[str, CompiledContract]:
    """Compile every top-level ``.vy`` file in ``source_dir``, keyed by file stem (``"Jobs"``).

    Results come from the cache when the sources and compiler version are unchanged.
    Raises :class:`ChainError` when there are no sources or a contract fails to compile.
    """
    source_dir = (source_dir or _paths.contracts_dir()).resolve()
    sources = _source_files(source_dir)
    if not any(path.suffix == ".vy" and path.parent == source_dir for path in sources):
        raise ChainError(
            f"No Vyper contracts (*.vy) found in {source_dir}; "
            "restore the project's contracts/ directory and retry."
        )
    cache_file = (cache_dir or _paths.cache_dir()) / "contracts" / f"{source_key(source_dir)}.json"
    cached = _read_cache(cache_file)
    if cached is not None:
        return cached
    compiled = {
        path.stem: _compile_one(path, source_dir)
        for path in sources
        if path.suffix == ".vy" and path.parent == source_dir
    }
    _write_cache(cache_file, compiled)
    return compiled


def source_key(source_dir: Path) -> str:
    """SHA-256 over the compiler version and every source file's relative path and bytes."""
    import vyper

    digest = hashlib.sha256(f"vyper {vyper.__version__}\n".encode())
    for path in _source_files(source_dir):
        digest.update(path.relative_to(source_dir).as_posix().encode() + b"\n")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _source_files(source_dir: Path) -> list[Path]:
    if not source_dir.is_dir():
        raise ChainError(f"The contract directory {source_dir} does not exist.")
    return sorted(
        path for path in source_dir.rglob("*") if path.is_file() and path.suffix in SOURCE_SUFFIXES
    )


def _compile_one(path: Path, source_dir: Path) -> CompiledContract:
    from vyper.compiler import compile_from_file_input
    from vyper.compiler.input_bundle import FilesystemInputBundle
    from vyper.exceptions import VyperException

    bundle = FilesystemInputBundle([source_dir])
    try:
        file_input = bundle.load_file(path.relative_to(source_dir))
        out = compile_from_file_input(
            file_input, input_bundle=bundle, output_formats=["abi", "bytecode"]
        )
    except VyperException as exc:
        raise ChainError(
            f"Contract {path.name} does not compile; fix it and retry:\n{exc}"
        ) from exc
    return CompiledContract(name=path.stem, abi=out["abi"], bytecode=out["bytecode"])


def _read_cache(cache_file: Path) -> dict[str, CompiledContract] | None:
    try:
        raw = json.loads(cache_file.read_text())
        return {name: CompiledContract(name=name, **entry) for name, entry in raw.items()}
    except (OSError, ValueError, TypeError):
        return None  # missing or damaged cache: recompile


def _write_cache(cache_file: Path, compiled: dict[str, CompiledContract]) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    payload = {c.name: {"abi": c.abi, "bytecode": c.bytecode} for c in compiled.values()}
    fd, tmp = tempfile.mkstemp(dir=cache_file.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle)
    os.replace(tmp, cache_file)
