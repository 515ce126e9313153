"""Fixtures of the fault tests: real ``allmende node run`` processes on loopback.

The ``nodes`` fixture creates node homes with ``allmende node init`` and kills every node
process it started when the test ends, however it ends.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_nodes import NodeProcess, init_node

# The shared node helpers (``nodes.py``) of the integration tests, for networks on a devnet.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

NodeFactory = Callable[..., NodeProcess]


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[NodeFactory]:
    """Make node homes: ``nodes("a", offline=True)`` or ``nodes("b", deployment=path, key=k)``.

    Homes are created with ``allmende node init`` (plaintext keys: devnet chain ids only). The
    processes are not started; call :meth:`NodeProcess.start`. All are killed at teardown.
    """
    made: list[NodeProcess] = []

    def make(name: str, **options: Any) -> NodeProcess:
        node = init_node(tmp_path / name, **options)
        made.append(node)
        return node

    try:
        yield make
    finally:
        for node in made:
            node.kill()
