"""The demo corpus every machine has: the ``.py`` files of Python's own standard library.

:func:`stdlib_files` lists them (relative paths, sorted), leaving out installed packages
(``site-packages``, ``dist-packages``), the standard library's test suites (``test``, ``tests``,
``idle_test``: they hold files that are not UTF-8 on purpose) and any file that does not decode
as UTF-8. :func:`shard_of` assigns a file to one of ``num_parts`` shards by the SHA-256 of its
relative path, so every node computes the same assignment and nodes that take different parts
hold different files. :func:`write_shard` copies one shard into a folder, which a node then
declares as its corpus (``allmende node stdlib-shard`` does this for a node home).

The files differ between Python versions: nodes of one demo run on the same Python.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

from allmende.errors import ConfigError

SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests",
                          "idle_test"})  # fmt: skip
MAX_PARTS = 1024


def stdlib_root() -> Path:
    """The folder of this Python's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[str]:
    """Every UTF-8 ``.py`` file of the standard library at ``root``, as sorted POSIX paths
    relative to it."""
    root = root or stdlib_root()
    found = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if SKIPPED_DIRS.intersection(relative.parts[:-1]) or not path.is_file():
            continue
        try:
            path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        found.append(relative.as_posix())
    return sorted(found)


def shard_of(relative: str, num_parts: int) -> int:
    """The shard (``0 .. num_parts - 1``) of the file at POSIX path ``relative``."""
    digest = hashlib.sha256(f"allmende/stdlib-shard/{relative}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_parts


def check_part(part: int, num_parts: int) -> None:
    """ConfigError unless ``0 <= part < num_parts <= MAX_PARTS``."""
    if not 1 <= num_parts <= MAX_PARTS:
        raise ConfigError(f"num_parts must be between 1 and {MAX_PARTS}, not {num_parts}.")
    if not 0 <= part < num_parts:
        raise ConfigError(
            f"part {part} does not exist when num_parts is {num_parts}; choose a part between "
            f"0 and {num_parts - 1}."
        )


def shard_files(part: int, num_parts: int, root: Path | None = None) -> list[str]:
    """The files of shard ``part`` of ``num_parts``, sorted."""
    check_part(part, num_parts)
    return [name for name in stdlib_files(root) if shard_of(name, num_parts) == part]


def write_shard(dest: Path, *, part: int, num_parts: int, root: Path | None = None) -> int:
    """Copy shard ``part`` of ``num_parts`` into ``dest`` (relative paths kept); the bytes
    written. ConfigError when ``dest`` exists and is not empty."""
    root = root or stdlib_root()
    names = shard_files(part, num_parts, root)
    if dest.exists() and any(dest.iterdir()):
        raise ConfigError(f"{dest} exists and is not empty; remove it or choose another folder.")
    total = 0
    for name in names:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        data = (root / name).read_bytes()
        target.write_bytes(data)
        total += len(data)
    return total
