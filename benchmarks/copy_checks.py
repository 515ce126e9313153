"""What the copy checks add to an aggregator's round: hashing payloads and screening the updates.

The checks (``allmende.node.roles.copies``) need, per round, the payload hash (SHA-256 of the
tensor data) of every update, taken while the update is decoded, and of the global model, then
a comparison of metadata and hashes. This times exactly that work, in-process, on the code the
nodes run (``decode_blob``, ``payload_digest``, ``screen``), against the decode it rides on, for
the FedAvg benchmark's job (``digits-mlp``, 8 trainers) and for larger models of the same
shape of work (random float32 tensors). Each figure is the median of ``--repeats`` rounds.

    .venv/bin/python benchmarks/copy_checks.py [--trainers 8] [--repeats 21] [--out PATH]

Prints one row per model and writes them with a description of the machine to
``benchmarks/results/copy_checks.json``. A diagnostic, not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from allmende.learn.task import load_task, seeded_state
from allmende.node.jobdata import update_metadata
from allmende.node.roles.copies import Candidate, screen
from allmende.store.codec import decode_blob, encode_state, payload_digest
from machine import describe_machine, one_line

RESULT = Path(__file__).resolve().parent / "results" / "copy_checks.json"
JOB, ROUND = 1, 0


def _median_ms(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _models() -> dict[str, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)

    def synthetic(n_params: int) -> dict[str, torch.Tensor]:
        side = int(n_params**0.5)
        return {"w": torch.randn(side, side, generator=generator), "b": torch.randn(side)}

    return {
        "digits-mlp": seeded_state(load_task("digits-mlp"), seed=0),
        "1M params": synthetic(1_000_000),
        "10M params": synthetic(10_000_000),
    }


def measure(
    name: str, model: dict[str, torch.Tensor], trainers: int, repeats: int
) -> dict[str, Any]:
    addresses = [f"0x{i:040x}" for i in range(1, trainers + 1)]
    blobs = [
        encode_state(
            {k: v + 0.01 * (i + 1) for k, v in model.items()},
            metadata=update_metadata(JOB, ROUND, address),
        )
        for i, address in enumerate(addresses)
    ]
    decoded = [decode_blob(blob) for blob in blobs]
    body_bytes = [blob[len(blob) - sum(t.numel() * t.element_size() for t in model.values()):]
                  for blob in blobs]  # fmt: skip

    def decode_round() -> None:  # what the aggregator does anyway (hash included)
        for blob in blobs:
            decode_blob(blob)

    def payload_hashes() -> None:  # the part of decode_round that is the copy checks' hashing
        for body in body_bytes:
            hashlib.sha256(body).hexdigest()

    def screening() -> None:  # the global model's payload hash, then the three rules
        global_payload = payload_digest(model)
        candidates = [
            Candidate(a, b.metadata, b.payload, (10, i))
            for i, (a, b) in enumerate(zip(addresses, decoded, strict=True))
        ]
        screen(candidates, expected=lambda t: update_metadata(JOB, ROUND, t),
               global_payload=global_payload)  # fmt: skip

    n_params = sum(t.numel() for t in model.values())
    decode_ms = _median_ms(decode_round, repeats)
    hash_ms = _median_ms(payload_hashes, repeats)
    screen_ms = _median_ms(screening, repeats)
    return {
        "model": name, "params": n_params, "trainers": trainers,
        "update_bytes": len(blobs[0]), "decode_ms": round(decode_ms, 3),
        "payload_hash_ms": round(hash_ms, 3), "screen_ms": round(screen_ms, 3),
        "extra_ms": round(hash_ms + screen_ms, 3),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    machine = describe_machine()
    print(one_line(machine))
    rows = [measure(name, model, args.trainers, args.repeats) for name, model in _models().items()]
    print(f"{'model':<12}{'params':>12}{'trainers':>10}{'decode ms':>12}{'payload hash ms':>17}"
          f"{'screen ms':>11}{'extra ms/round':>16}")  # fmt: skip
    for row in rows:
        print(
            f"{row['model']:<12}{row['params']:>12}{row['trainers']:>10}{row['decode_ms']:>12}"
            f"{row['payload_hash_ms']:>17}{row['screen_ms']:>11}{row['extra_ms']:>16}"
        )
    print(
        "decode ms: decoding the round's updates (payload hash included); extra: the payload "
        "hashes plus the global model's hash and the rules."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
