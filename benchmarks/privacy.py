"""Privacy figures: what secure aggregation (SecAgg+) costs against plain aggregation.

Secure-aggregation rows (``"secagg"``): one round of the real protocol
(:mod:`allmende.privacy.secagg`: X25519, HKDF, ChaCha20-Poly1305 shares, Shamir over
GF(2^521 - 1), ChaCha20 masks in Z_2^64, EIP-712 signatures) at 8, 16 and 32 trainers, with no
dropout and with a third of the trainers killed after they sent their masked update, on updates
the size of the ``digits-mlp`` model (9,610 parameters; ``--params`` for another size). It is an
in-process simulation: every trainer's steps and the aggregator's unmasking run one after the
other in this process with the real crypto and message encodings, and no network.

- ``bytes_per_trainer``: bytes one trainer sends in the round (its keys, shares and reveal
  messages as JSON, its masked update manifest and body); ``plain_bytes_per_trainer``: the
  float32 update (4 bytes a parameter) a plain round sends. Bytes received are reported too.
- ``round_s``: one trainer's protocol work (the mean over trainers: they run in parallel) plus
  the aggregator's unmasking; ``plain_round_s``: a plain FedAvg of the same updates in torch.
  Local training and transfer time, the same in both, are left out.

Writes ``benchmarks/results/privacy.json`` (``{"rows": [...], "secagg": [...]}``; rows written
by the differential-privacy part are kept).
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from allmende.chain.keys import LocalKey
from allmende.learn.aggregate import fedavg
from allmende.net.messages import MessageDomain, SignedMessage
from allmende.privacy.masking import decode
from allmende.privacy.params import SecureSpec
from allmende.privacy.secagg import RevealLedger, TrainerSession, digest, round_context
from allmende.privacy.unmask import unmask
from machine import describe_machine

DIGITS_PARAMS = 64 * 128 + 128 + 128 * 10 + 10  # digits-mlp: Linear(64, 128), Linear(128, 10)
OUT = Path(__file__).resolve().parent / "results" / "privacy.json"
DOMAIN = MessageDomain(chain_id=31337, registry="0x5FbDB2315678afecb367f032d93F642f64180aa3")
JOBS = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"


def _size(message: SignedMessage) -> int:
    return len(message.model_dump_json().encode())


def secagg_round(trainers: int, dropout: bool, params: int, clip: float = 1.0) -> dict[str, Any]:
    """One round; ``dropout``: a third of the trainers die after their masked update."""
    accounts = [LocalKey.from_key(secrets.token_bytes(32)) for _ in range(trainers)]
    ctx = round_context(
        job=1,
        round=0,
        domain=DOMAIN,
        jobs_address=JOBS,
        roster=[a.address for a in accounts],
        spec=SecureSpec(clip=clip),
        max_weight=1,
    )
    work = {a.address: 0.0 for a in accounts}
    sent = dict.fromkeys(work, 0)
    received = dict.fromkeys(work, 0)

    def timed(address: str, step: Any, *args: Any) -> Any:
        start = time.perf_counter()
        result = step(*args)
        work[address] += time.perf_counter() - start
        return result

    sessions = {
        a.address: timed(a.address, lambda a=a: TrainerSession(ctx, a, ledger=RevealLedger()))
        for a in accounts
    }
    keys = {a: timed(a, s.keys_message) for a, s in sessions.items()}
    shares = {a: timed(a, s.shares_message, keys) for a, s in sessions.items()}
    for a, s in sessions.items():
        timed(a, s.receive_shares, shares)
        sent[a] += _size(keys[a]) + _size(shares[a])
        received[a] += sum(_size(keys[v]) + _size(shares[v]) for v in ctx.neighbours[a])
    rng = np.random.default_rng(0)
    deltas = {a: rng.normal(0.0, 0.05, params).astype(np.float32) for a in sessions}
    manifests: dict[str, Any] = {}
    bodies: dict[str, bytes] = {}
    for a, s in sessions.items():
        manifest, body, _ = timed(a, s.masked_update, deltas[a].astype(np.float64), 1)
        manifests[a], bodies[a] = manifest, body
        sent[a] += len(json.dumps(manifest).encode()) + len(body)
    dead = set(list(sessions)[: trainers // 3]) if dropout else set()
    reveals = []
    for a, s in sessions.items():
        if a not in dead:
            message = timed(a, s.reveal_message, manifests)
            reveals.append(message)
            sent[a] += _size(message)
            received[a] += sum(len(json.dumps(m).encode()) for m in manifests.values())
    bundles = {digest(m): m for m in [*keys.values(), *shares.values()]}
    start = time.perf_counter()
    out = unmask(ctx, manifests=manifests, bodies=bodies, bundles=bundles, reveals=reveals)
    mean = decode(out.total, ctx.ring) / out.weight
    unmask_s = time.perf_counter() - start
    exact = np.mean([np.clip(deltas[a].astype(np.float64), -clip, clip) for a in sessions], axis=0)
    assert out.included == ctx.roster, out.excluded
    error = float(np.max(np.abs(mean - exact)))

    states = [{"w": torch.from_numpy(deltas[a])} for a in sessions]
    start = time.perf_counter()
    fedavg({"w": torch.zeros(params)}, states, [1] * trainers)
    plain_s = time.perf_counter() - start
    alive = [a for a in sessions if a not in dead]
    return {
        "trainers": trainers,
        "dropout": len(dead) / trainers,
        "degree": ctx.size.k,
        "threshold": ctx.size.t,
        "params": params,
        "bytes_per_trainer": round(statistics.mean(sent[a] for a in alive)),
        "bytes_received_per_trainer": round(statistics.mean(received[a] for a in alive)),
        "plain_bytes_per_trainer": 4 * params,
        "round_s": round(statistics.mean(work.values()) + unmask_s, 4),
        "trainer_s": round(statistics.mean(work.values()), 4),
        "unmask_s": round(unmask_s, 4),
        "plain_round_s": round(plain_s, 5),
        "max_abs_error": error,
        "error_bound": 2.0 ** -(ctx.ring.scale_bits + 1) + 2.0**-52 * clip,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trainers", default="8,16,32")
    parser.add_argument("--params", type=int, default=DIGITS_PARAMS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = [
        secagg_round(n, dropout, args.params)
        for n in (int(x) for x in args.trainers.split(","))
        for dropout in (False, True)
    ]
    print(
        f"{'trainers':>8} {'dropout':>7} {'k':>3} {'t':>3} {'sent B':>9} {'plain B':>8} "
        f"{'ratio':>6} {'round s':>8} {'plain s':>8}"
    )
    for r in rows:
        print(
            f"{r['trainers']:>8} {r['dropout']:>7.2f} {r['degree']:>3} {r['threshold']:>3} "
            f"{r['bytes_per_trainer']:>9} {r['plain_bytes_per_trainer']:>8} "
            f"{r['bytes_per_trainer'] / r['plain_bytes_per_trainer']:>6.2f} "
            f"{r['round_s']:>8.3f} {r['plain_round_s']:>8.5f}"
        )
    result: dict[str, Any] = {"rows": []}
    if args.out.exists():
        result = json.loads(args.out.read_text())
    result["machine"] = describe_machine()
    result["secagg"] = rows
    result.setdefault("rows", [])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
