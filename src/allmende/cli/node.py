"""``allmende node``: create a node home, run the node, show its data, put blobs into it, collect
garbage.

A node home holds ``node.toml`` (config), ``key.json`` (the node's Ethereum key, encrypted unless
``--insecure-plaintext-key`` on a devnet), ``state.sqlite`` and ``blobs/``. Local tools put blobs
into a node with ``allmende node put``, which writes into the store directly (peers only ever pull
blobs; the API has no upload endpoint).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from allmende.chain import Deployment
from allmende.errors import ConfigError, NodeError
from allmende.learn.dataset import DataSource
from allmende.net.endpoints import LOOPBACK_RANGES
from allmende.node.config import (
    CONFIG_FILE,
    DEFAULT_CHAIN_ID,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEVNET_CHAIN_IDS,
    load_config,
    parse_config,
    resolve,
)
from allmende.node.home import create_home, open_state, open_store
from allmende.node.jobspec import JobSpec, load_jobspec
from allmende.store.blobs import check_digest

app = typer.Typer(
    help="Create, run and maintain an Allmende node (one node home per node).",
    no_args_is_help=True,
)

_out = Console(highlight=False)
HOME = typer.Argument(..., help="The node home directory.")


def _password_prompt(confirm: bool) -> str:
    return str(typer.prompt("Key password", hide_input=True, confirmation_prompt=confirm))


@app.command()
def init(
    home: Path = HOME,
    deployment: Path | None = typer.Option(
        None, "--deployment", help="deployment.json of the chain (e.g. .devnet/deployment.json)."
    ),
    offline: bool = typer.Option(
        False, "--offline", help="No chain: for benchmarks and data-plane tests only."
    ),
    host: str = typer.Option(DEFAULT_HOST, "--host"),
    port: int = typer.Option(DEFAULT_PORT, "--port"),
    public_url: str | None = typer.Option(None, "--public-url", help="Endpoint peers use."),
    roles: str = typer.Option("trainer,aggregator", "--roles", help="Comma-separated roles."),
    stake_wei: int = typer.Option(0, "--stake-wei", help="Stake to keep on the Registry."),
    insecure_plaintext_key: bool = typer.Option(
        False, "--insecure-plaintext-key", help="Store the key unencrypted (devnet chains only)."
    ),
    trust: list[str] = typer.Option(
        [], "--trust", help="Offline mode: an address allowed to send messages (repeatable)."
    ),
    import_key_env: str | None = typer.Option(
        None, "--import-key-env", help="Use the private key in this environment variable."
    ),
    allow_endpoint_range: list[str] = typer.Option(
        [],
        "--allow-endpoint-range",
        help="A non-public address range (CIDR) whose peer endpoints this node contacts "
        "(repeatable; on a devnet chain loopback is allowed without it).",
    ),
    allow_task: list[str] = typer.Option(
        [],
        "--allow-task",
        help="A task this node may train for (repeatable); without one a trainer refuses "
        "every job until [trainer] allowed_tasks in node.toml names some.",
    ),
) -> None:
    """Create a node home: node.toml, an encrypted key, and the state database.

    The key password is read from $ALLMENDE_KEY_PASSWORD, or prompted for. On a devnet chain
    (and offline) ``[net] allow_endpoint_ranges`` lists the loopback ranges, where every node of
    a devnet listens.

    Consent by default: a trainer trains for nobody until its operator names the tasks it allows
    (``--allow-task NAME``, or ``allowed_tasks`` under ``[trainer]`` in node.toml).
    """
    if (home / CONFIG_FILE).exists():
        raise NodeError(f"{home} already holds a node ({CONFIG_FILE}); pick another directory.")
    if (deployment is None) == (not offline):
        raise ConfigError("Give exactly one of --deployment PATH or --offline.")
    node: dict[str, object] = {
        "host": host,
        "port": port,
        "roles": [r.strip() for r in roles.split(",") if r.strip()],
    }
    if public_url:
        node["public_url"] = public_url
    chain: dict[str, object] = {"offline": offline, "trusted_signers": trust}
    if deployment is not None:
        chain["deployment"] = str(deployment.resolve())
    chain_id = Deployment.load(deployment).chain_id if deployment else DEFAULT_CHAIN_ID
    ranges = list(LOOPBACK_RANGES) if chain_id in DEVNET_CHAIN_IDS else []
    ranges += [r for r in allow_endpoint_range if r not in ranges]
    sections: dict[str, object] = {
        "node": node,
        "chain": chain,
        "stake": {"amount_wei": stake_wei},
        "net": {"allow_endpoint_ranges": ranges},
    }
    if allow_task:
        sections["trainer"] = {"allowed_tasks": list(dict.fromkeys(allow_task))}
    config = parse_config(sections, source="The node settings")
    private_key = None
    if import_key_env is not None:
        private_key = os.environ.get(import_key_env)
        if not private_key:
            raise ConfigError(f"${import_key_env} is not set; export the private key there.")
    password = None
    if not insecure_plaintext_key:
        password = os.environ.get(config.node.password_env) or _password_prompt(confirm=True)
    address = create_home(
        home,
        config,
        chain_id=chain_id,
        password=password,
        plaintext=insecure_plaintext_key,
        private_key=private_key,
    )
    _out.print(f"node home {home} created; node address {address}", soft_wrap=True)
    if "trainer" in config.node.roles:
        _say_consent(home, config.trainer.allowed_tasks)


def _say_consent(home: Path, allowed: list[str] | None) -> None:
    """What the new trainer trains for, and how to change it."""
    from allmende.learn.task import installed_tasks

    installed = sorted(installed_tasks())
    if allowed:
        _out.print(f"the trainer trains for tasks {', '.join(allowed)}", soft_wrap=True)
        missing = [name for name in allowed if name not in installed]
        if missing:
            _out.print(
                f"note: {', '.join(missing)} not installed here (installed: "
                f"{', '.join(installed) or 'none'}); install it before jobs come",
                soft_wrap=True,
            )
        return
    _out.print(
        "the trainer trains for nobody yet (consent by default): to allow a task, add "
        f'allowed_tasks = ["{installed[0] if installed else "TASK"}"] under [trainer] in '
        f"{home / CONFIG_FILE}, or create the node with --allow-task NAME; installed tasks: "
        f"{', '.join(installed) or 'none'}",
        soft_wrap=True,
    )


@app.command()
def data(
    home: Path = HOME,
    spec: Path | None = typer.Option(
        None, "--spec", help="A job spec (TOML): show the data as its task and [data] read it."
    ),
    label: str | None = typer.Option(
        None, "--label", help="A table's column whose values to count (default: the spec's)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show what this node would train on, without training: the declared source, its rows or
    bytes, schema and label counts. Every file is read, so a bad one is named here.

    With --spec, the job's task also reads the data as that job's [data] options say (columns,
    classes, image size), with the same checks the node makes before it joins the job.
    """
    from allmende.learn.sources import summarize

    config = load_config(home)
    source = config.trainer.dataset
    job = load_jobspec(spec) if spec is not None else None
    if label is None and job is not None and isinstance(job.data.get("label"), str):
        label = job.data["label"]
    summary = summarize(source, label=label).as_dict()
    if job is not None:
        summary["task"] = _as_task_reads(job, source)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
        return
    _out.print(f"{summary['kind']}: {summary['location']}", soft_wrap=True)
    if summary["kind"] != "partition":
        _out.print(f"  {summary['examples']} examples, {summary['bytes']} bytes")
    for name, kind in summary["schema"].items():
        _out.print(f"  {name}: {kind}", soft_wrap=True)
    if summary["labels"]:
        _out.print("  labels: " + ", ".join(f"{k} {v}" for k, v in summary["labels"].items()))
    for note in summary["notes"]:
        _out.print(f"  {note}", soft_wrap=True)
    if job is not None:
        reads = summary["task"]
        _out.print(
            f"task {reads['task']}: {reads['examples']} examples, inputs {reads['input_shape']}"
        )
        if reads["classes"]:
            _out.print("  classes: " + ", ".join(f"{k} {v}" for k, v in reads["classes"].items()))


@app.command()
def privacy(
    home: Path = HOME,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show the privacy budget: ε spent per declared dataset over all jobs, and what is left
    of budget_epsilon (section trainer.privacy of node.toml). Reads the node's state; safe
    while the node runs."""
    from allmende.node.roles.privacy import dataset_key
    from allmende.privacy.budget import PrivacyLedger
    from allmende.store.state import STATE_FILE

    config = load_config(home)
    path = resolve(home, config.node.data_dir) / STATE_FILE
    if not path.exists():
        raise ConfigError(f"No node state at {path}; run `allmende node init {home}` first.")
    ledger = PrivacyLedger.open(path)
    try:
        spends = {spend.dataset: spend for spend in ledger.datasets()}
        current = dataset_key(config.trainer.dataset)
        if current not in spends:
            spends[current] = ledger.dataset_spend(current)
    finally:
        ledger.close()
    budget = config.trainer.privacy.budget_epsilon
    rows: list[dict[str, Any]] = []
    for name in sorted(spends, key=lambda n: (n != current, n)):
        spend = spends[name]
        rows.append({
            "dataset": name,
            "declared": name == current,
            "epsilon_spent": spend.epsilon,
            "delta_spent": spend.delta,
            "budget_epsilon": budget,
            "epsilon_left": None if budget is None else max(budget - spend.epsilon, 0.0),
            "jobs": [
                {"job": job.job, "rounds": job.contributions, "epsilon": job.epsilon,
                 "delta": job.delta}
                for job in spend.jobs
            ],
        })  # fmt: skip
    if as_json:
        typer.echo(json.dumps({"datasets": rows}, sort_keys=True))
        return
    for row in rows:
        left = f"{row['epsilon_left']:.4g} left of {budget:g}" if budget else "no budget set"
        mark = "declared dataset" if row["declared"] else "no longer declared"
        _out.print(f"{row['dataset']} ({mark})", soft_wrap=True)
        _out.print(f"  spent ε {row['epsilon_spent']:.4g} (δ {row['delta_spent']:.3g}), {left}")
        for job in row["jobs"]:
            _out.print(f"  job {job['job']}: {job['rounds']} rounds, ε {job['epsilon']:.4g}")


@app.command("stdlib-shard")
def stdlib_shard(
    home: Path = HOME,
    part: int = typer.Option(..., "--part", help="This node's shard, 0 .. num-parts - 1."),
    num_parts: int = typer.Option(..., "--num-parts", help="How many shards the nodes share."),
    folder: str = typer.Option("corpus", "--folder", help="Where in the home to write it."),
) -> None:
    """Write one shard of this Python's standard library (its .py files, split by the hash of
    each file's path) into the node home and declare it as the node's text corpus.

    Nodes that take different parts of the same --num-parts hold different files: the demo
    corpus of the byte-gpt task (see `make text-demo`).
    """
    import tomllib

    from allmende.learn.stdlib_text import write_shard
    from allmende.node.config import write_config

    load_config(home)  # a home that exists and parses
    dest = home / folder
    written = write_shard(dest, part=part, num_parts=num_parts)
    raw = tomllib.loads((home / CONFIG_FILE).read_text())
    raw.setdefault("trainer", {})["dataset"] = {"kind": "text", "path": folder}
    write_config(home, parse_config(raw, source=str(home / CONFIG_FILE)))
    _out.print(
        f"wrote shard {part} of {num_parts} of the standard library ({written} bytes) to {dest}; "
        f'[trainer.dataset] now declares kind = "text", path = "{folder}"',
        soft_wrap=True,
    )


def _as_task_reads(job: JobSpec, source: DataSource) -> dict[str, object]:
    """How the job's task reads the node's data (this imports torch)."""
    from collections import Counter

    from allmende.learn.task import load_task

    task = load_task(job.task, data=job.data)
    local = task.load_data(source)
    names = getattr(task.options, "classes", None)
    counts = Counter(int(t) for t in local.targets.reshape(-1).tolist()) if names else Counter()
    return {
        "task": task.name,
        "examples": len(local),
        "input_shape": list(local.inputs.shape[1:]),
        "classes": {
            (str(names[i]) if names and i < len(names) else str(i)): counts[i]
            for i in sorted(counts)
        },
    }


@app.command()
def run(
    homes: list[Path] = typer.Argument(..., help="The node home directory (or several)."),
) -> None:
    """Register the node on chain, stake, and serve its API until SIGINT/SIGTERM.

    With several homes, one node process per home is forked from this one after it has imported
    the node's libraries, so many nodes on one machine start about as fast as one. Each node
    logs to HOME/node.log; key passwords come from the environment (no prompt).
    """
    if len(homes) > 1:
        from allmende.node.fleet import run_fleet

        code = run_fleet(homes, say=typer.echo)
        raise typer.Exit(code)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from allmende.node.process import run_node  # torch and the web stack: only to run

    run_node(homes[0], prompt=lambda: _password_prompt(confirm=False))


@app.command()
def put(
    home: Path = HOME,
    file: Path = typer.Argument(..., help="The file to store."),
    pin: str = typer.Option("local", "--pin", help="Reference that keeps it from `node gc`."),
) -> None:
    """Copy a file into the node's blob store and pin it; prints its SHA-256."""
    config = load_config(home)
    digest = open_store(home, config).put_file(file)
    state = open_state(home, config)
    try:
        state.pin(digest, pin)
    finally:
        state.close()
    typer.echo(digest)


@app.command()
def gc(
    home: Path = HOME,
    grace_seconds: float | None = typer.Option(
        None, "--grace-seconds", help="Keep unpinned blobs younger than this ([store] default)."
    ),
) -> None:
    """Delete blobs no job or local record references (pinned in the state database)."""
    config = load_config(home)
    store = open_store(home, config)
    state = open_state(home, config)
    try:
        keep = state.pinned()
    finally:
        state.close()
    grace = config.store.gc_grace_seconds if grace_seconds is None else grace_seconds
    removed = store.gc(keep, grace_seconds=grace)
    typer.echo(json.dumps({"removed": removed, "kept": sorted(keep)}))


@app.command()
def fetch(
    home: Path = HOME,
    digest: str = typer.Argument(..., help="SHA-256 (hex) of the blob to fetch."),
    pin: str = typer.Option("local", "--pin", help="Reference that keeps it from `node gc`."),
) -> None:
    """Fetch a blob by hash from the registered nodes into this node's store, verified.

    Peers are asked one after another (those the Registry lists, own endpoint excluded); one
    that fails, times out or sends wrong bytes is skipped and recorded. Prints the peer that
    served it.
    """
    asyncio.run(_fetch(home, digest.lower().removeprefix("0x"), pin))


async def _fetch(home: Path, digest: str, pin: str) -> None:
    from allmende.chain import Contracts
    from allmende.node.remote import JobReader, find_deployment

    check_digest(digest)
    # Each failing peer is named in the one error line if no peer serves it; no log lines first.
    logging.getLogger("allmende.net.client").setLevel(logging.ERROR)
    config = load_config(home)
    contracts = Contracts.connect(find_deployment(home=home, deployment=None))
    reader = JobReader(contracts, open_store(home, config), policy=config.net.endpoint_policy)
    try:
        own = config.node.endpoint.rstrip("/")
        peers = [url for url in await reader.all_peers() if url.rstrip("/") != own]
        if not peers:
            raise NodeError("No other node is registered on this chain to fetch the blob from.")
        result = await reader.peers.fetch_blob(digest, peers)
    finally:
        await reader.aclose()
    state = open_state(home, config)
    try:
        state.pin(digest, pin)
    finally:
        state.close()
    typer.echo(f"{digest} ({result.size} bytes) from {result.peer or 'the local store'}")


@app.command()
def withdraw(home: Path = HOME) -> None:
    """Pay out what this node's account is owed: job rewards and refunds (Jobs), slashed stake
    awarded to it (Registry). Pull payments: nothing arrives until the owner withdraws.
    """
    from allmende.node.submit import connect_as_node

    contracts, account = connect_as_node(
        home, prompt=lambda: _password_prompt(confirm=False), purpose="withdrawing"
    )
    paid = 0
    for name, contract in (("Jobs", contracts.jobs), ("Registry", contracts.registry)):
        owed = contract.owed(account.address)
        if owed > 0:
            receipt = contract.withdraw()
            paid += owed
            _out.print(f"{name}: withdrew {owed} wei (fee {receipt.fee} wei)")
    if paid == 0:
        _out.print(f"{account.address} is owed nothing.")
    else:
        _out.print(f"{account.address} received {paid} wei in all.")


@app.command()
def status(home: Path = HOME) -> None:
    """Show this node on chain: registration, stake (locked by jobs, free, unbonding), the stake
    each job holds locked, what the contracts owe it, and the shares of finalized rounds it has
    not claimed yet."""
    from allmende.chain import Contracts, Deployment
    from allmende.node.config import load_config, resolve
    from allmende.node.keystore import key_address

    config = load_config(home)
    if config.chain.deployment is None:
        raise NodeError(f"The node at {home} is offline; it has no chain to show.")
    deployment = Deployment.load(resolve(home, config.chain.deployment))
    address = key_address(resolve(home, config.node.key_file))
    contracts = Contracts.connect(deployment, rpc_url=config.chain.rpc_url)
    registry, jobs = contracts.registry, contracts.jobs
    node = registry.node(address)
    _out.print(f"node {address}")
    if not node.registered:
        _out.print("  not registered: `allmende node run` registers it")
        return
    locked = registry.locked(address)
    _out.print(
        f"  endpoint {node.endpoint}, roles {node.roles}, "
        f"{'active' if registry.is_active(address) else 'inactive (stake below min_stake)'}\n"
        f"  stake {node.stake} wei: {locked} locked by jobs, {node.stake - locked} free; "
        f"unbonding {node.unbonding} wei"
        + (f" (available at {node.unbond_available_at})" if node.unbonding else "")
        + f"\n  owed: {jobs.owed(address)} wei by Jobs, {registry.owed(address)} wei by Registry"
        " (`allmende node withdraw`)"
    )
    for job_id in range(1, jobs.next_job_id()):
        held = registry.lock_of(deployment.jobs.address, job_id, address)
        if held:
            job = jobs.job(job_id)
            until = "the job is open" if job.ended_at == 0 else f"{job.ended_at} + the window"
            _out.print(f"  job {job_id}: {held} wei locked until {until}")
        if jobs.trainer_index(job_id, address) is None and not jobs.is_aggregator(job_id, address):
            continue
        shares = jobs.unclaimed(job_id, address)
        if shares:
            listed = ", ".join(f"round {r} {role} {wei} wei" for r, role, wei in shares)
            _out.print(
                f"  job {job_id}: unclaimed {sum(w for _, _, w in shares)} wei ({listed}); "
                "the running node claims them", soft_wrap=True,
            )  # fmt: skip
