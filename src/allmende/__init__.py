"""Allmende: an open, decentralized network for training, verifying and trading AI models.

``Task`` (the base class of installable ML tasks) is imported on first use, so that tools which
only talk to the chain do not pay for importing torch.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from allmende.errors import (
    AggregationError,
    AllmendeError,
    BlobNameError,
    BlobNotFound,
    BlobTooLarge,
    ChainError,
    CodecError,
    ConfigError,
    ContractRevert,
    DataError,
    DevnetError,
    HashMismatch,
    MessageError,
    NodeError,
    PeerError,
    PrivacyError,
    StoreError,
    TaskError,
)

if _TYPE_CHECKING:
    from allmende.learn.task import Task

__version__ = "0.1.0"

__all__ = [
    "AggregationError",
    "AllmendeError",
    "BlobNameError",
    "BlobNotFound",
    "BlobTooLarge",
    "ChainError",
    "CodecError",
    "ConfigError",
    "ContractRevert",
    "DataError",
    "DevnetError",
    "HashMismatch",
    "MessageError",
    "NodeError",
    "PeerError",
    "PrivacyError",
    "StoreError",
    "Task",
    "TaskError",
    "__version__",
]


def __getattr__(name: str) -> _Any:
    if name == "Task":
        from allmende.learn.task import Task

        return Task
    raise AttributeError(f"module 'allmende' has no attribute {name!r}")
