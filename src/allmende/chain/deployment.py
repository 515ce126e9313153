"""The deployment file: where the contracts live on which chain, and their ABIs.

``allmende devnet up`` writes it to ``<state dir>/deployment.json``; nodes, the CLI and the tests
load it. It is read from disk, so it is validated like any other untrusted input.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from allmende.chain.addresses import is_address, to_checksum_address
from allmende.errors import ConfigError

DEPLOYMENT_FILE = "deployment.json"


def _checksummed(value: str) -> str:
    if not is_address(value):
        raise ValueError(f"{value!r} is not an Ethereum address")
    return to_checksum_address(value)


Address = Annotated[str, AfterValidator(_checksummed)]


class ContractInfo(BaseModel):
    """One deployed contract: its address and ABI."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: Address
    abi: list[dict[str, Any]]


class Deployment(BaseModel):
    """Chain id, RPC URL, and the deployed ``Registry`` and ``Jobs`` contracts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chain_id: int
    rpc_url: str
    deploy_block: int
    registry: ContractInfo
    jobs: ContractInfo

    @classmethod
    def load(cls, path: Path) -> Deployment:
        """Read and validate a deployment file; :class:`ConfigError` says what is wrong."""
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"No deployment file at {path}; run `allmende devnet up` or pass the right path."
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"The deployment file {path} is unreadable or not JSON ({exc}); "
                "delete it and run `allmende devnet up` again."
            ) from exc
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top level)"
            raise ConfigError(
                f"The deployment file {path} is invalid at {where}: {first['msg']}; "
                "delete it and run `allmende devnet up` again."
            ) from exc

    def save(self, path: Path) -> None:
        """Write the file atomically (a crash never leaves half a deployment file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(self.model_dump_json(indent=2))
        os.replace(tmp, path)
