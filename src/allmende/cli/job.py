"""``allmende job``: submit a training job, watch it train, show its verified lineage, list
jobs, and cancel or refund one as its owner.

``submit``, ``cancel`` and ``refund`` run against the owner's node home (its key signs; for
``submit`` it pays the escrow and its store serves the spec and initial model). ``watch``,
``show`` and ``list`` only read: they take the chain from ``--home`` or ``--deployment`` and fetch
blobs by hash from the job's participants.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from allmende.errors import NodeError
from allmende.node.control import submit_through_node
from allmende.node.jobspec import loads_jobspec, read_jobspec_text

if TYPE_CHECKING:  # the chain, torch and the task code load only for the commands that use them
    from allmende.chain import Jobs
    from allmende.node.lineage import JobHistory

app = typer.Typer(help="Submit, watch and inspect training jobs.", no_args_is_help=True)

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)
WEI_PER_ETH = 10**18
WATCH_POLL_SECONDS = 0.5
HOME_OPTION = typer.Option(None, "--home", help="A node home: its chain and blob store are used.")
DEPLOYMENT_OPTION = typer.Option(
    None, "--deployment", help="deployment.json of the chain (default .devnet/deployment.json)."
)


def short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}"


def eth(wei: int) -> str:
    return f"{wei / WEI_PER_ETH:.6f}"


@app.command()
def submit(
    spec: Path = typer.Argument(
        ..., help="The job spec (TOML), e.g. examples/jobs/digits-fedavg.toml."
    ),
    home: Path = typer.Option(..., "--home", help="The job owner's node home."),
) -> None:
    """Publish the spec and initial model into the owner's node, create the job with its escrow.

    A running node does it when asked through its control socket (HOME/node.sock): it has the
    task code, the key and the chain connection loaded already. Otherwise this command does it.
    Prints the job id on stdout (details on stderr).
    """
    text = read_jobspec_text(spec)
    job_spec = loads_jobspec(text, source=str(spec))  # refused here, before any node is asked
    submitted = submit_through_node(home, text)
    if submitted is None:
        from allmende.node.submit import submit_job

        submitted = submit_job(
            home, job_spec, prompt=lambda: str(typer.prompt("Key password", hide_input=True))
        )
    _err.print(
        f"job {submitted.job_id} created by {submitted.owner}: task {job_spec.task}, "
        f"{job_spec.rounds} rounds, escrow {eth(submitted.escrow)} ETH\n"
        f"  spec {submitted.spec_hash}\n  initial model {submitted.model_hash}"
    )
    typer.echo(submitted.job_id)


@app.command()
def watch(
    job_id: int = typer.Argument(..., help="The job id."),
    home: Path | None = HOME_OPTION,
    deployment: Path | None = DEPLOYMENT_OPTION,
    timeout: float = typer.Option(
        0, "--timeout", help="Give up after this many seconds (0: never)."
    ),
) -> None:
    """Follow a job live: a progress bar over rounds, each round's test accuracy, loss and
    contributors. Exits 0 when the job finished, 1 when it was cancelled or timed out."""
    asyncio.run(_watch(job_id, home, deployment, timeout))


async def _watch(job_id: int, home: Path | None, deployment: Path | None, timeout: float) -> None:
    from allmende.chain import JobStatus
    from allmende.chain.jobs import from_bitmap
    from allmende.node.jobdata import hex_hash
    from allmende.node.remote import evaluate, open_reader, task_and_reference

    started = time.monotonic()
    async with open_reader(home, deployment) as reader:
        job = reader.job(job_id)
        spec = await reader.spec(job_id, job)
        task, reference = task_and_reference(spec)
        shown = 0
        contributors: list[str] = []
        columns = (
            TextColumn(f"job {job_id}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rounds"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=_out) as progress:
            bar = progress.add_task("rounds", total=job.rounds)
            while True:
                job = reader.job(job_id)
                trainers = reader.jobs.trainers(job_id) if shown < job.current_round else []
                while shown < job.current_round:
                    result = reader.jobs.round_result(job_id, shown)
                    digest = hex_hash(result.model_hash)
                    peers = await reader.job_peers(job_id, job)
                    state = await reader.state(digest, peers, reference=reference)
                    metrics = evaluate(task, state)
                    who = [trainers[i] for i in from_bitmap(result.included) if i < len(trainers)]
                    scores = "".join(
                        f"{name} {metrics[name]:.4f}  "
                        for name in ("accuracy", "loss")
                        if name in metrics
                    )
                    progress.console.print(
                        f"round {shown:>3}/{job.rounds}  {scores}model {digest[:12]}  "
                        f"{len(who)}/{len(trainers)} trainers"
                    )
                    if who != contributors:  # say who contributed whenever it changes
                        contributors = who
                        progress.console.print(
                            "      contributors: " + " ".join(a[:8] for a in who)
                        )
                    shown += 1
                    progress.update(bar, completed=shown)
                if job.status != JobStatus.OPEN:
                    break
                if timeout and time.monotonic() - started > timeout:
                    raise NodeError(
                        f"Job {job_id} did not finish within {timeout:.0f} s (round "
                        f"{job.current_round} of {job.rounds}); watch it again later."
                    )
                await asyncio.sleep(WATCH_POLL_SECONDS)
    if job.status == JobStatus.CANCELLED:
        raise NodeError(f"Job {job_id} was cancelled in round {job.current_round}.")
    _out.print(f"job {job_id} finished; final model {hex_hash(job.final_model_hash)}")


@app.command()
def show(
    job_id: int = typer.Argument(..., help="The job id."),
    home: Path | None = HOME_OPTION,
    deployment: Path | None = DEPLOYMENT_OPTION,
) -> None:
    """Print the job's lineage (every round's model, trainers, payouts) and verify it against
    the chain and the blobs. Exits 1 if any check fails."""
    asyncio.run(_show(job_id, home, deployment))


async def _show(job_id: int, home: Path | None, deployment: Path | None) -> None:
    from allmende.chain import JobStatus
    from allmende.node.jobdata import hex_hash
    from allmende.node.lineage import check_lineage, read_history
    from allmende.node.remote import open_reader, task_and_reference

    async with open_reader(home, deployment) as reader:
        history = read_history(reader, job_id)
        job = history.job
        spec = await reader.spec(job_id, job)
        _, reference = task_and_reference(spec)
        checks = await check_lineage(reader, history, spec, reference)
        owed = {account: reader.jobs.owed(account) for account in history.payouts()}
    status = JobStatus(job.status).name.lower()
    _out.print(
        f"job {job_id}: task {spec.task}, rule {spec.aggregation.rule}, owner {job.owner}, "
        f"{status}, {job.current_round}/{job.rounds} rounds\n"
        f"  spec          {hex_hash(job.spec_hash)}\n"
        f"  initial model {history.initial_model_hash}"
    )
    failed_rounds = {c.round for c in checks if not c.ok}
    table = Table(title="Lineage", box=None, padding=(0, 1), title_justify="left")
    for column in ("round", "model", "trainers", "check"):
        table.add_column(column, justify="right" if column == "round" else "left", overflow="fold")
    for record in history.rounds:
        left_out = [t for t in history.trainers if t not in record.included]
        table.add_row(
            str(record.round),
            record.model_hash,
            f"{len(record.included)}/{len(history.trainers)}"
            + (f" (not {' '.join(short(t) for t in left_out)})" if left_out else ""),
            "FAILED" if record.round in failed_rounds else "ok",
        )
    _out.print(table)
    _out.print(participants_table(history, owed))
    if job.final_model_hash != bytes(32):
        _out.print(f"final model {hex_hash(job.final_model_hash)}")
    bad = [c for c in checks if not c.ok]
    for check in bad:
        where = f"round {check.round}" if check.round is not None else "job"
        _err.print(f"[red]check failed[/] {where}: {check.what} {check.detail}")
    if bad:
        raise NodeError(f"The lineage of job {job_id} failed {len(bad)} of {len(checks)} checks.")
    _out.print(f"lineage check: all {len(checks)} checks passed")


def participants_table(history: JobHistory, owed: dict[str, int]) -> Table:
    """Everyone the job paid: role, rounds included, wei credited, and still owed to them."""
    table = Table(title="Payouts (ETH)", box=None, padding=(0, 1), title_justify="left")
    for column in ("account", "role", "credited", "owed now"):
        table.add_column(column, justify="left" if column in ("account", "role") else "right")
    trainers = {t.lower() for t in history.trainers}
    for account, amount in sorted(history.payouts().items(), key=lambda item: -item[1]):
        role = "trainer" if account.lower() in trainers else "aggregator"
        table.add_row(account, role, eth(amount), eth(owed[account]))
    return table


@app.command("list")
def list_jobs(
    home: Path | None = HOME_OPTION,
    deployment: Path | None = DEPLOYMENT_OPTION,
    every: bool = typer.Option(False, "--all", help="Also the finished and cancelled jobs."),
) -> None:
    """List the chain's jobs: status, round, escrow held and committee (open jobs only unless
    --all)."""
    from allmende.chain import Contracts, JobStatus
    from allmende.node.remote import find_deployment

    jobs = Contracts.connect(find_deployment(home=home, deployment=deployment)).jobs
    table = Table(box=None, padding=(0, 1))
    for column in ("job", "status", "round", "escrow ETH", "committee", "owner"):
        table.add_column(column, justify="right" if column in ("job", "escrow ETH") else "left")
    shown = 0
    for job_id in range(1, jobs.next_job_id()):
        job = jobs.job(job_id)
        if job.status != JobStatus.OPEN and not every:
            continue
        kind = "open" if job.open_committee else "named"
        if job.open_committee and not job.sealed:
            kind += f", signup ({job.n_volunteers} volunteers)"
        committee = f"{job.quorum} of {job.committee_size}, {kind}"
        status = JobStatus(job.status).name.lower()
        table.add_row(
            str(job_id), status, f"{job.current_round}/{job.rounds}", eth(job.escrow), committee,
            job.owner,
        )  # fmt: skip
        shown += 1
    if shown == 0:
        _out.print("No jobs." if every else "No open jobs (--all shows the others).")
        return
    _out.print(table)


def _as_owner(home: Path, job_id: int, purpose: str) -> tuple[Jobs, int]:
    """The owner's Jobs binding (signing with the key at ``home``) and the job's escrow;
    NodeError when the key is not the job's owner."""
    from allmende.node.submit import connect_as_node

    contracts, account = connect_as_node(home, purpose=purpose)
    job = contracts.jobs.job(job_id)
    if job.status == 0:
        raise NodeError(f"There is no job {job_id} on this chain; check the job id.")
    if job.owner.lower() != account.address.lower():
        raise NodeError(
            f"Job {job_id} belongs to {job.owner}, not to this node's account {account.address}; "
            "only its owner can do this."
        )
    return contracts.jobs, job.escrow


@app.command()
def cancel(
    job_id: int = typer.Argument(..., help="The job id."),
    home: Path = typer.Option(..., "--home", help="The owner's node home (its key signs)."),
) -> None:
    """Cancel a job that cannot finish: its round missed its deadline after every reopen, or an
    open committee found too few volunteers. Then `job refund` returns the unspent escrow."""
    from allmende.errors import ContractRevert

    jobs, _ = _as_owner(home, job_id, "cancelling a job")
    try:
        jobs.cancel(job_id)
    except ContractRevert as exc:
        raise NodeError(
            f"The contract refused to cancel job {job_id} ({exc}); a job is cancelled only when "
            "no round can finalize any more."
        ) from None
    _out.print(f"job {job_id} cancelled; `allmende job refund {job_id} --home {home}` next")


@app.command()
def refund(
    job_id: int = typer.Argument(..., help="The job id."),
    home: Path = typer.Option(..., "--home", help="The owner's node home (its key signs)."),
) -> None:
    """Credit a finished or cancelled job's unspent escrow to its owner (then `node withdraw`)."""
    from allmende.errors import ContractRevert

    jobs, escrow = _as_owner(home, job_id, "refunding a job")
    try:
        jobs.refund(job_id)
    except ContractRevert as exc:
        raise NodeError(
            f"The contract refused to refund job {job_id} ({exc}); only a finished or "
            "cancelled job with escrow left is refunded."
        ) from None
    _out.print(f"job {job_id}: {eth(escrow)} ETH credited to the owner; `allmende node withdraw`")
