"""The Registry's role bits (``contracts/Registry.vy``): what a node says it does, as a bitmask.

A module of its own, free of the chain stack, so that reading a node's config does not import
the contract bindings.
"""

from __future__ import annotations

ROLE_TRAINER = 1
ROLE_AGGREGATOR = 2
ROLE_VERIFIER = 4
ROLE_PROVIDER = 8
