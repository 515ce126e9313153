"""End-to-end fixtures: real ``allmende node run`` processes on the session's real devnet.

The node helpers live in ``tests/integration/nodes.py`` (shared with the integration tests) and
``tests/faults/fault_nodes.py`` (node homes written in-process, for networks of many nodes).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))
