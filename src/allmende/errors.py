"""Every error Allmende raises on purpose.

One base, :class:`AllmendeError`; each subsystem's errors also inherit the matching builtin, so a
caller can catch either (``except ConfigError`` or ``except ValueError``). Messages are full
sentences that say what to do next. The tree (builtin bases in brackets)::

    AllmendeError
    ├── ConfigError [ValueError]        a config file, job spec or command-line value is wrong
    ├── ChainError [RuntimeError]       the chain is unreachable or a transaction failed
    │   ├── ContractRevert              a contract refused a call ("jobs: ...")
    │   └── DevnetError                 the local Anvil is missing or failed to start
    ├── StoreError [OSError]            the blob store or the state database failed
    │   └── BlobNotFound [KeyError]     no blob of that name is stored here
    ├── BlobNameError [ValueError]      a string is not a blob name (64 lowercase hex)
    ├── HashMismatch [ValueError]       bytes do not hash to the name they came under
    ├── BlobTooLarge [ValueError]       a blob is over the configured size limit
    ├── CodecError [ValueError]         a tensor blob is malformed, non-canonical or not finite
    ├── PeerError [ConnectionError]     a peer is unreachable or served something wrong
    ├── MessageError [ValueError]       a signed peer message is forged, expired, replayed, ...
    ├── TaskError [LookupError]         a task is not installed, or its data declaration is wrong
    │   └── DataError [ValueError]      the operator's data files are missing, unreadable or wrong
    ├── AggregationError [ValueError]   updates cannot be aggregated
    ├── NodeError [RuntimeError]        the node process cannot start or continue
    └── PrivacyError [RuntimeError]     a privacy rule or the privacy ledger stops an update

Every class here is exported from :mod:`allmende`.
"""

from __future__ import annotations


class AllmendeError(Exception):
    """Base of every error Allmende raises on purpose."""


class ConfigError(AllmendeError, ValueError):
    """A config file, job spec or command-line value is malformed or inconsistent."""


class ChainError(AllmendeError, RuntimeError):
    """The chain could not be reached, or a transaction failed."""


class ContractRevert(ChainError):
    """A contract refused a call; ``reason`` is the contract's own message (``"jobs: ..."``)."""

    def __init__(self, reason: str, *, function: str = "") -> None:
        self.reason = reason
        self.function = function
        where = f" in {function}" if function else ""
        super().__init__(f"The contract refused the call{where}: {reason}")


class DevnetError(ChainError):
    """The local Anvil dev chain is missing, not running, or failed to start."""


class StoreError(AllmendeError, OSError):
    """The node's blob store or state database failed."""


class BlobNotFound(StoreError, KeyError):
    """No blob with that hash is stored here."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "blob not found"


class BlobNameError(AllmendeError, ValueError):
    """A string that should name a blob is not 64 lowercase hexadecimal characters."""


class HashMismatch(AllmendeError, ValueError):
    """Bytes did not hash to the name they were given under."""


class BlobTooLarge(AllmendeError, ValueError):
    """A blob exceeds the configured size limit."""


class CodecError(AllmendeError, ValueError):
    """A tensor blob is malformed, non-canonical, or holds non-finite values."""


class PeerError(AllmendeError, ConnectionError):
    """A peer could not be reached or served something wrong."""


class MessageError(AllmendeError, ValueError):
    """A signed peer message is malformed, forged, expired, replayed or from an unknown node."""


class TaskError(AllmendeError, LookupError):
    """A task is not installed, or its data declaration is wrong."""


class DataError(TaskError, ValueError):
    """The node's declared data (a table, an image folder, a text corpus) is missing, unreadable,
    empty, or does not fit what the job's task asks of it; the message names the file and the row
    or field."""


class AggregationError(AllmendeError, ValueError):
    """Updates could not be aggregated (too few, wrong shapes, bad parameters)."""


class NodeError(AllmendeError, RuntimeError):
    """The node process cannot start or continue."""


class PrivacyError(AllmendeError, RuntimeError):
    """A privacy rule stops this node from contributing: its budget is spent, a job's privacy
    settings are refused, or the privacy ledger cannot be written (nothing leaves then)."""
