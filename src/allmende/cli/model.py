"""``allmende model``: fetch a model blob by hash from the network and verify it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import typer
from rich.console import Console

from allmende.errors import ConfigError, PeerError
from allmende.node.remote import open_reader
from allmende.store.blobs import check_digest
from allmende.store.codec import decode_state

app = typer.Typer(help="Fetch and verify models.", no_args_is_help=True)

_err = Console(stderr=True, highlight=False)


@app.command()
def get(
    digest: str = typer.Argument(..., help="The model's SHA-256 (hex), e.g. a job's final model."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the safetensors file."),
    job: int | None = typer.Option(None, "--job", help="Ask this job's participants first."),
    home: Path | None = typer.Option(None, "--home", help="A node home: its chain and store."),
    deployment: Path | None = typer.Option(None, "--deployment", help="deployment.json to use."),
) -> None:
    """Fetch a model by hash from the nodes of the network, verify it, and write it to a file.

    The bytes must hash to DIGEST and be a canonical safetensors file of finite tensors; the file
    loads with ``safetensors.torch.load_file``.
    """
    digest = digest.lower().removeprefix("0x")
    try:
        check_digest(digest)
    except Exception:
        raise ConfigError(
            f"{digest!r} is not a SHA-256 hex digest; pass 64 hex characters."
        ) from None
    asyncio.run(_get(digest, output, job, home, deployment))


async def _get(
    digest: str, output: Path, job_id: int | None, home: Path | None, deployment: Path | None
) -> None:
    async with open_reader(home, deployment) as reader:
        peers = await reader.job_peers(job_id, reader.job(job_id)) if job_id is not None else []
        peers += [url for url in await reader.all_peers() if url not in peers]
        if not peers:
            raise PeerError("No node is registered on this chain to fetch the model from.")
        fetched = await reader.peers.fetch_blob(digest, peers)
        data = reader.store.read_bytes(digest)
    state = decode_state(data)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, output)
    source = fetched.peer or "the local store"
    n_params = sum(t.numel() for t in state.values())
    _err.print(
        f"model {digest} verified ({len(state)} tensors, {n_params} values) from {source}; "
        f"written to {output}"
    )
