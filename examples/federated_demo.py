"""`make demo`: a federated training job across separate node processes on a real local chain.

What it does, the way a user would, with the `allmende` command:

1. `allmende devnet up` starts Anvil and deploys the contracts (in a temporary directory);
2. `allmende node init` creates nine node homes from the devnet's funded accounts: the job
   owner's node (which also aggregates), six trainers each declaring its own Dirichlet(0.5)
   slice of the digits data, and two aggregators; one `allmende node run HOME ...` starts each as
   its own OS process, forked after the libraries are imported once (logs in each home's
   `node.log`);
3. `allmende job submit examples/jobs/federated-demo.toml` publishes spec and initial model and
   escrows the reward; the trainers' and aggregators' nodes join by themselves;
4. `allmende job watch` shows the rounds' progress, accuracy, loss and contributors;
5. `allmende job show` prints and checks the lineage and payouts, `allmende model get` fetches
   and verifies the final model, which is evaluated on the held-out test split;
6. every process is shut down. Exit code 0 only if the job finished with test accuracy >= 0.93.

Run: ``python examples/federated_demo.py`` (after ``make setup``); ``--keep`` keeps the files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from rich.console import Console

from allmende.chain import Contracts, Deployment, dev_keys
from allmende.learn.digits import DigitsMLP
from allmende.net.health import HealthProbe
from allmende.node.config import parse_config, write_config
from allmende.store.codec import decode_state

HERE = Path(__file__).resolve().parent
SPEC = HERE / "jobs" / "federated-demo.toml"
TARGET_ACCURACY = 0.93
N_TRAINERS = 6
N_AGGREGATORS = 2
STAKE_WEI = 10**18
PARTITION = {"partition": "dirichlet", "alpha": 0.5, "num_parts": N_TRAINERS, "seed": 7}
START_TIMEOUT = 600.0  # node processes start slowly on a busy machine
JOB_TIMEOUT = 900.0
STOP_TIMEOUT = 15.0
WEI_PER_ETH = 10**18

console = Console(highlight=False)
STARTED = time.monotonic()


def say(message: str) -> None:
    """Print ``message`` with the seconds since the demo started."""
    console.print(f"[dim]{time.monotonic() - STARTED:6.1f} s[/]  {message}")


def allmende_command() -> list[str]:
    """The `allmende` script next to this Python, else the module."""
    script = Path(sys.executable).parent / "allmende"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "allmende.cli.main"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Demo:
    """The processes and files of one demo run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cli = allmende_command()
        self.devnet_dir = root / "devnet"
        self.nodes: dict[str, Path] = {}
        self.launcher: subprocess.Popen[bytes] | None = None  # `allmende node run HOME ...`
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.allow_task = "digits-mlp"  # what the demo's trainers consent to train

    def run(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run an `allmende` command; its stdout. A failure stops the demo with its message."""
        result = subprocess.run(
            [*self.cli, *args], env=env or self.env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise DemoFailed(f"`allmende {' '.join(args)}` failed: {result.stderr.strip()}")
        return result.stdout

    def show(self, *args: str) -> int:
        """Run an `allmende` command with its output on this terminal; its exit code."""
        return subprocess.run([*self.cli, *args], env=self.env, check=False).returncode

    def devnet_up(self) -> Deployment:
        self.run("devnet", "up", "--state", str(self.devnet_dir), "--port", str(free_port()))
        deployment = Deployment.load(self.devnet_dir / "deployment.json")
        say(f"devnet at {deployment.rpc_url}, Jobs {deployment.jobs.address}")
        return deployment

    def init_nodes(self, plans: dict[str, tuple[str, str, dict[str, object]]]) -> None:
        """`allmende node init` for every node (in parallel), then the operator's edits.

        ``plans`` maps a node name to (private key, roles, extra node.toml sections).
        """
        started = []
        for name, (key, roles, _) in plans.items():
            home = self.root / name
            argv = [
                *self.cli, "node", "init", str(home),
                "--deployment", str(self.devnet_dir / "deployment.json"),
                "--port", str(free_port()),
                "--roles", roles,
                "--stake-wei", str(STAKE_WEI),
                "--insecure-plaintext-key",
                "--import-key-env", "DEMO_NODE_KEY",
                "--allow-task", self.allow_task,  # a trainer trains only for tasks it allows
            ]  # fmt: skip
            env = {**self.env, "DEMO_NODE_KEY": key}
            process = subprocess.Popen(
                argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            started.append((name, process))
        for name, process in started:
            _, stderr = process.communicate()
            if process.returncode != 0:
                raise DemoFailed(f"`allmende node init` of {name} failed: {stderr.decode()}")
            home = self.root / name
            extra = plans[name][2]
            if extra:  # the operator edits node.toml: the roles' sections
                raw = tomllib.loads((home / "node.toml").read_text())
                for section, values in extra.items():
                    raw[section] = {**raw.get(section, {}), **values}  # type: ignore[dict-item]
                write_config(home, parse_config(raw))
            self.nodes[name] = home

    def start_nodes(self) -> None:
        """One `allmende node run HOME ...` for every node: one process per node, forked after
        the libraries are imported once; each node logs to HOME/node.log."""
        homes = [str(home) for home in self.nodes.values()]
        with (self.root / "nodes.log").open("wb") as log:
            self.launcher = subprocess.Popen(
                [*self.cli, "node", "run", *homes],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        waiting = dict(self.nodes)
        with HealthProbe() as probe:
            while waiting:
                if self.launcher.poll() is not None:
                    raise DemoFailed(f"`allmende node run` exited; see {self.root / 'nodes.log'}")
                for name, home in list(waiting.items()):
                    port = tomllib.loads((home / "node.toml").read_text())["node"]["port"]
                    if probe.ready(f"http://127.0.0.1:{port}"):
                        del waiting[name]  # serving, and its roles have loaded their tasks
                if time.monotonic() > deadline:
                    raise DemoFailed(
                        f"nodes {sorted(waiting)} did not start within {START_TIMEOUT} s; see "
                        "their node.log"
                    )
                time.sleep(0.3)
        say(f"{len(self.nodes)} node processes running: {', '.join(self.nodes)}")

    def stop_nodes(self) -> None:
        """SIGTERM to `allmende node run`, which stops every node; SIGKILL after a grace time."""
        launcher = self.launcher
        if launcher is None or launcher.poll() is not None:
            return
        launcher.send_signal(signal.SIGTERM)
        try:
            launcher.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)  # the nodes are in its process group
            launcher.wait()

    def devnet_down(self) -> None:
        subprocess.run(
            [*self.cli, "devnet", "down", "--state", str(self.devnet_dir)],
            env=self.env,
            capture_output=True,
            check=False,
        )


class DemoFailed(Exception):
    """The demo cannot go on; the message says why."""


def set_up_nodes(demo: Demo) -> None:
    keys = dev_keys(2 + N_TRAINERS + N_AGGREGATORS)[1:]  # key 0 deployed the contracts
    plans: dict[str, tuple[str, str, dict[str, object]]] = {"owner": (keys[0], "aggregator", {})}
    for i in range(N_TRAINERS):
        dataset = {**PARTITION, "part": i}
        plans[f"trainer{i + 1}"] = (keys[1 + i], "trainer", {"trainer": {"dataset": dataset}})
    for i in range(N_AGGREGATORS):
        plans[f"aggregator{i + 1}"] = (keys[1 + N_TRAINERS + i], "aggregator", {})
    demo.init_nodes(plans)


def final_accuracy(demo: Demo, deployment: Deployment, job_id: int) -> tuple[str, float]:
    """Fetch the final model with `allmende model get` and evaluate it on the test split."""
    contracts = Contracts.connect(deployment)
    final = contracts.jobs.job(job_id).final_model_hash.hex()
    path = demo.root / "final-model.safetensors"
    demo.run("model", "get", final, "-o", str(path), "--job", str(job_id),
             "--deployment", str(demo.devnet_dir / "deployment.json"))  # fmt: skip
    task = DigitsMLP()
    model = task.model()
    model.load_state_dict(decode_state(path.read_bytes()))
    return final, task.evaluate(model, task.test_data())["accuracy"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the demo's files")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="allmende-demo-"))
    demo = Demo(root)
    started = time.monotonic()
    try:
        deployment = demo.devnet_up()
        set_up_nodes(demo)
        demo.start_nodes()
        job_id = int(demo.run("job", "submit", str(SPEC), "--home", str(demo.nodes["owner"])))
        say(f"job {job_id} submitted from {SPEC.name}")
        deployment_arg = ("--deployment", str(demo.devnet_dir / "deployment.json"))
        watched = demo.show("job", "watch", str(job_id), *deployment_arg,
                            "--timeout", str(JOB_TIMEOUT))  # fmt: skip
        if watched != 0:
            raise DemoFailed(f"the job did not finish (see the node logs in {root})")
        say("job finished; checking its lineage")
        lineage_ok = demo.show("job", "show", str(job_id), *deployment_arg) == 0
        final, accuracy = final_accuracy(demo, deployment, job_id)
        say("final model fetched and verified; shutting down")
    except DemoFailed as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        return 1
    finally:
        demo.stop_nodes()
        demo.devnet_down()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.monotonic() - started
    console.print(f"final model {final}")
    console.print(f"final test accuracy {accuracy:.4f} (target {TARGET_ACCURACY})")
    console.print(
        f"lineage check {'passed' if lineage_ok else 'FAILED'}; wall time {elapsed:.0f} s"
    )
    return 0 if lineage_ok and accuracy >= TARGET_ACCURACY else 1


if __name__ == "__main__":
    sys.exit(main())
