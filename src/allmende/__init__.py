"""Allmende: an open, decentralized network for training, verifying and trading AI models."""

from allmende.errors import (
    AggregationError,
    AllmendeError,
    ChainError,
    CodecError,
    ConfigError,
    ContractRevert,
    HashMismatch,
    MessageError,
    PeerError,
    StoreError,
    TaskError,
)

__version__ = "0.1.0"

__all__ = [
    "AggregationError",
    "AllmendeError",
    "ChainError",
    "CodecError",
    "ConfigError",
    "ContractRevert",
    "HashMismatch",
    "MessageError",
    "PeerError",
    "StoreError",
    "TaskError",
    "__version__",
]
