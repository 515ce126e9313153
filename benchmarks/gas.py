"""Gas used by every Registry and Jobs function, per transaction, on a real Anvil.

Runs a whole job four times — 6, 32, 256 and 1,024 trainers, a named committee of 3
aggregators, quorum 2, 2 rounds, declared weights, trainer and aggregator stakes locked. Each
round: the trainers commit, the three aggregators commit their votes, reveals follow (the
reveal that brings the result to the quorum finalizes the round), every included trainer
claims its share and the two agreeing aggregators theirs. In the last round one trainer
misses the deadline (so votes take the deadline path) and the third aggregator reveals a
wrong model for the same included set, which `challenge` then slashes. Then the locks are
released after the challenge window and the owner's refund takes what is left, a second
job's round dies through its three reopens and is cancelled, and a third job's open
committee is sealed from the aggregators' volunteering. Reports for each function the worst
receipt ``gasUsed`` over all its calls (intrinsic 21,000 gas and calldata included); the
finalizing reveal is reported apart, as ``Jobs.reveal+finalize``, and ``Jobs.reveal`` is a
reveal below the quorum. Writes ``.gas-snapshot`` (one ``name gas`` line per entry) and
exits 1 when ``commit_update``, ``commit_vote`` or a reveal below the quorum exceed 80,000
gas, or the finalizing reveal 150,000.

    python benchmarks/gas.py [--anvil PATH] [--snapshot PATH | --no-snapshot]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from web3 import Web3

from allmende.chain.compile import compile_contracts
from allmende.chain.jobs import included_words, vote_commitment

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ANVIL = ROOT / ".tools" / "anvil" / "node_modules" / ".bin" / "anvil"
DEFAULT_SNAPSHOT = ROOT / ".gas-snapshot"
GAS_BOUND = 80_000
BOUNDED = ("Jobs.commit_update", "Jobs.commit_vote", "Jobs.reveal")
FINALIZING = "Jobs.reveal+finalize"  # the reveal that reaches the quorum and finalizes the round
FINALIZING_BOUND = 150_000
TRAINER_COUNTS = (6, 32, 256, 1024)
AGGREGATORS = 3
QUORUM = 2
ROUNDS = 2
ETHER = 10**18
MIN_STAKE = ETHER
UNBOND_DELAY = 3_600
ADMIN_DELAY = 2 * 86_400
CHALLENGE_WINDOW = 86_400
SIGNUP_PERIOD = 300
MAX_REOPENS = 3
TRAINER_STAKE = ETHER // 4
AGGREGATOR_STAKE = ETHER // 2
WEIGHT_CAP = 2**64 - 1  # declared weights
SLASH_AMOUNT = ETHER // 2
AGGREGATOR_SHARE_BPS = 2_000
ROUND_DEADLINE = 600
REWARD_PER_ROUND = 10 * ETHER + 7  # odd, so the pro-rata split leaves dust
CURRENT_ROUND = 10  # position of current_round in the Job struct that ``jobs(job_id)`` returns
ANVIL_START_TIMEOUT = 20.0

GasTable = dict[str, int]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def anvil(path: Path, accounts: int) -> Iterator[Web3]:
    """Start an Anvil with ``accounts`` funded dev accounts on a free port; stop it on exit."""
    port = _free_port()
    process = subprocess.Popen(
        [str(path), "--port", str(port), "--accounts", str(accounts), "--balance", "100000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}"))
        deadline = time.monotonic() + ANVIL_START_TIMEOUT
        while not w3.is_connected():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"Anvil at {path} did not start; run `make setup` and retry.")
            time.sleep(0.1)
        yield w3
    finally:
        process.terminate()
        process.wait(timeout=10)


class GasMeter:
    """Sends transactions from Anvil's unlocked accounts and keeps the worst gasUsed per name.

    Transactions go out with a fixed gas limit and price (no estimate round trip) and their
    receipts are read in batches (:meth:`flush`); Anvil mines each one as it arrives, in
    order, so a receipt read later is the same as one waited for."""

    TX_GAS = 8_000_000
    BATCH = 100  # receipts read after this many transactions
    GAS_PRICE = 10**10

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        self.worst: GasTable = defaultdict(int)
        self._pending: list[tuple[str, Any]] = []

    def send(self, name: str, call: Any, sender: str, value: int = 0) -> None:
        tx = {"from": sender, "value": value, "gas": self.TX_GAS, "gasPrice": self.GAS_PRICE}
        self._pending.append((name, call.transact(tx)))
        if len(self._pending) >= self.BATCH:
            self.flush()

    def flush(self) -> list[Any]:
        """The receipts of the transactions sent since the last flush; exits when one reverted."""
        receipts = []
        for name, tx_hash in self._pending:
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
            if receipt["status"] != 1:
                raise SystemExit(f"{name} reverted; the benchmark scenario is broken.")
            self.worst[name] = max(self.worst[name], int(receipt["gasUsed"]))
            receipts.append(receipt)
        self._pending = []
        return receipts

    def deploy(self, compiled: Any, sender: str, *args: Any) -> Any:
        factory = self.w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        self.send(f"{compiled.name}.deploy", factory.constructor(*args), sender)
        (receipt,) = self.flush()
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=compiled.abi)

    def advance(self, seconds: int) -> None:
        self.flush()
        self.w3.provider.make_request("evm_increaseTime", [seconds])
        self.w3.provider.make_request("evm_mine", [])


def run_job(meter: GasMeter, n_trainers: int) -> GasTable:
    """Deploy both contracts and drive one job with ``n_trainers`` through every function."""
    meter.worst = defaultdict(int)
    accounts = meter.w3.eth.accounts
    admin, owner = accounts[0], accounts[1]
    aggregators = accounts[2 : 2 + AGGREGATORS]
    trainers = accounts[2 + AGGREGATORS : 2 + AGGREGATORS + n_trainers]
    compiled = compile_contracts(source_dir=ROOT / "contracts")
    registry = meter.deploy(compiled["Registry"], admin, MIN_STAKE, UNBOND_DELAY, ADMIN_DELAY)
    jobs = meter.deploy(
        compiled["Jobs"], admin, registry.address, AGGREGATOR_SHARE_BPS, SLASH_AMOUNT,
        CHALLENGE_WINDOW,
    )
    fn: Callable[[str], Any] = lambda name: getattr(jobs.functions, name)  # noqa: E731
    set_first = registry.functions.set_first_slasher(jobs.address)
    meter.send("Registry.set_first_slasher", set_first, admin)

    for index, node in enumerate(trainers + aggregators):
        roles = 1 if node in trainers else 2
        endpoint = f"http://127.0.0.1:{9000 + index}"
        register = registry.functions.register(endpoint, roles, b"\1" * 32)
        meter.send("Registry.register", register, node)
        meter.send("Registry.stake", registry.functions.stake(), node, MIN_STAKE * 2)

    def create(committee: list[str]) -> Any:
        return fn("create_job")(
            b"\x51" * 32, b"\x60" * 32, ROUNDS, REWARD_PER_ROUND, n_trainers - 1, n_trainers,
            QUORUM, ROUND_DEADLINE, committee, AGGREGATORS, 0 if committee else SIGNUP_PERIOD,
            TRAINER_STAKE, AGGREGATOR_STAKE, WEIGHT_CAP,
        )

    meter.send("Jobs.create_job", create(aggregators), owner, ROUNDS * REWARD_PER_ROUND)
    meter.flush()
    job_id = jobs.functions.next_job_id().call() - 1
    for node in trainers:
        meter.send("Jobs.join", fn("join")(job_id, 1), node)
    for node in aggregators:
        meter.send("Jobs.join", fn("join")(job_id, 2), node)

    first, second, third = aggregators
    for round_ in range(ROUNDS):
        last = round_ == ROUNDS - 1
        committing = trainers[:-1] if last else trainers
        weights = [100 + index for index in range(len(committing))]
        for index, node in enumerate(committing):
            update = Web3.keccak(text=f"update {round_} {index}")
            commit = fn("commit_update")(job_id, round_, update, weights[index])
            meter.send("Jobs.commit_update", commit, node)
        if last:
            meter.advance(ROUND_DEADLINE + 1)
        included = included_words((1 << len(committing)) - 1)
        model = Web3.keccak(text=f"model {round_}")
        # in the last round the third aggregator votes a wrong model for the same included
        # set before the others reach the quorum: `challenge` slashes it afterwards
        voted = {first: model, second: model, third: Web3.keccak(text="a wrong model")}
        salts = {node: Web3.keccak(text=f"salt {node} {round_}") for node in aggregators}
        for node in aggregators:
            commitment = vote_commitment(voted[node], included, sum(weights), salts[node], node)
            meter.send("Jobs.commit_vote", fn("commit_vote")(job_id, round_, commitment), node)
        below = [third, first] if last else [first]
        for node in below:
            reveal = fn("reveal")(job_id, round_, voted[node], included, sum(weights), salts[node])
            meter.send("Jobs.reveal", reveal, node)
        meter.flush()
        if jobs.functions.jobs(job_id).call()[CURRENT_ROUND] != round_:
            raise SystemExit("A reveal below the quorum finalized; the scenario is broken.")
        reveal = fn("reveal")(job_id, round_, model, included, sum(weights), salts[second])
        meter.send(FINALIZING, reveal, second)
        meter.flush()
        if jobs.functions.jobs(job_id).call()[CURRENT_ROUND] != round_ + 1:
            raise SystemExit("The quorum reveal did not finalize; the scenario is broken.")
        for node in committing:
            claim = fn("claim")(job_id, round_, model, included, sum(weights))
            meter.send("Jobs.claim", claim, node)
        for node in (first, second):
            meter.send("Jobs.claim_vote", fn("claim_vote")(job_id, round_), node)
    meter.send("Jobs.challenge", fn("challenge")(job_id, third), owner)

    meter.send("Jobs.withdraw", fn("withdraw")(), trainers[0])
    meter.send("Registry.withdraw", registry.functions.withdraw(), owner)
    meter.advance(CHALLENGE_WINDOW)  # claims close; the owner's refund takes what is left
    meter.send("Jobs.refund", fn("refund")(job_id), owner)
    meter.send("Jobs.withdraw", fn("withdraw")(), owner)
    for node in (trainers[0], aggregators[0]):
        meter.send("Jobs.release", fn("release")(job_id), node)

    meter.send("Jobs.create_job", create(aggregators), owner, ROUNDS * REWARD_PER_ROUND)
    for _ in range(MAX_REOPENS):
        meter.advance(ROUND_DEADLINE + 1)
        meter.send("Jobs.reopen", fn("reopen")(job_id + 1), owner)
    meter.advance(ROUND_DEADLINE + 1)
    meter.send("Jobs.cancel", fn("cancel")(job_id + 1), owner)

    meter.send("Jobs.create_job", create([]), owner, ROUNDS * REWARD_PER_ROUND)
    for node in aggregators:
        meter.send("Jobs.join", fn("join")(job_id + 2, 2), node)
    meter.advance(SIGNUP_PERIOD + 1)
    meter.send("Jobs.seal", fn("seal")(job_id + 2), owner)

    meter.send("Registry.request_unbond", registry.functions.request_unbond(MIN_STAKE), trainers[1])
    meter.advance(UNBOND_DELAY)
    meter.send("Registry.withdraw_unbonded", registry.functions.withdraw_unbonded(), trainers[1])
    meter.flush()
    return dict(meter.worst)


def print_table(tables: dict[int, GasTable]) -> None:
    names = sorted({name for table in tables.values() for name in table})
    header = f"{'function':<28}" + "".join(f"{f'{n} trainers':>14}" for n in tables)
    print(header)
    print("-" * len(header))
    for name in names:
        cells = "".join(f"{tables[n].get(name, 0):>14,}" for n in tables)
        bound = f"  (bound {GAS_BOUND:,})" if name in BOUNDED else ""
        bound = f"  (bound {FINALIZING_BOUND:,})" if name == FINALIZING else bound
        print(f"{name:<28}{cells}{bound}")


def write_snapshot(path: Path, tables: dict[int, GasTable]) -> None:
    lines = [
        f"{name}[{n}_trainers] {gas}"
        for n, table in tables.items()
        for name, gas in sorted(table.items())
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anvil", type=Path, default=Path(os.environ.get("ANVIL", DEFAULT_ANVIL)))
    parser.add_argument("--snapshot", type=Path, default=DEFAULT_SNAPSHOT)
    parser.add_argument("--no-snapshot", action="store_true")
    args = parser.parse_args()

    accounts = 2 + AGGREGATORS + max(TRAINER_COUNTS)
    with anvil(args.anvil, accounts) as w3:
        meter = GasMeter(w3)
        tables = {n: run_job(meter, n) for n in TRAINER_COUNTS}
    print_table(tables)
    if not args.no_snapshot:
        write_snapshot(args.snapshot, tables)
    bounds = {name: GAS_BOUND for name in BOUNDED} | {FINALIZING: FINALIZING_BOUND}
    over = [
        f"{name} uses {table[name]:,} gas with {n} trainers, above its bound of {bound:,}"
        for n, table in tables.items()
        for name, bound in bounds.items()
        if table.get(name, 0) > bound
    ]
    for line in over:
        print(f"FAIL: {line}.", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
