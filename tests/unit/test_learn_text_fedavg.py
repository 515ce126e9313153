"""FedAvg of ``byte-gpt`` over standard-library shards reproduces a plain PyTorch loop bit for bit.

Allmende's path: each trainer's corpus is a shard written by ``write_shard``, read by the task
(``load_data``), trained by ``train_local`` on windows drawn with the derived seed, averaged by
``aggregate("fedavg")``. The reference is written out with plain PyTorch and Python from the
same files: bytes read directly, the last tenth of each file cut off, window starts from
``torch.randint`` with the seed, ``torch.optim.Adam``, an example-weighted mean.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from allmende.learn.aggregate import aggregate
from allmende.learn.dataset import TextSource
from allmende.learn.gpt import ByteGPT, GPTConfig
from allmende.learn.stdlib_text import shard_files, stdlib_root, write_shard
from allmende.learn.task import load_task, seeded_state
from allmende.learn.train import derive_seed, train_local

TRAINERS = 3
ROUNDS = 2
LR = 3e-3
BATCH = 8
JOB_ID = 9
OPTIONS = {"n_layer": 1, "n_head": 2, "n_embd": 16, "context": 16, "windows": 24}
ADDRESSES = [f"0x{i + 20:040x}" for i in range(TRAINERS)]


@pytest.fixture(autouse=True)
def _restore_torch_settings():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def allmende_fedavg(sources: list[TextSource]) -> dict[str, torch.Tensor]:
    task = load_task("byte-gpt", data=OPTIONS)
    state = seeded_state(task, seed=1)
    datasets = [task.load_data(source) for source in sources]
    for round_ in range(ROUNDS):
        updates = []
        for address, data in zip(ADDRESSES, datasets, strict=True):
            new, examples, _ = train_local(
                task, state, data, epochs=1, batch_size=BATCH, lr=LR, optimizer="adam",
                momentum=0.9, seed=derive_seed(JOB_ID, round_, address),
            )  # fmt: skip
            updates.append((address, new, examples))
        state = aggregate("fedavg", state, updates, {})
    return state


def plain_stream(part: int) -> torch.Tensor:
    """A shard's training bytes: every file in path order, without its last tenth."""
    kept = b""
    for name in shard_files(part, TRAINERS):
        data = (stdlib_root() / name).read_bytes()
        if data:
            kept += data[: len(data) - max(1, math.floor(len(data) * 0.1))]
    return torch.tensor(list(kept), dtype=torch.long)


def plain_fedavg() -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, context=16)
    torch.manual_seed(1)
    state = {k: v.detach().clone() for k, v in ByteGPT(config).state_dict().items()}
    streams = {address: plain_stream(i) for i, address in enumerate(ADDRESSES)}
    t, windows = config.context, OPTIONS["windows"]
    for round_ in range(ROUNDS):
        trained = []
        for address in sorted(ADDRESSES):
            stream = streams[address]
            seed = derive_seed(JOB_ID, round_, address)
            torch.manual_seed(seed)
            model = ByteGPT(config)
            model.load_state_dict(state)
            adam = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.999), foreach=False)
            starts = torch.randint(0, len(stream) - t, (windows,),
                                   generator=torch.Generator().manual_seed(seed))  # fmt: skip
            for first in range(0, windows, BATCH):
                offsets = starts[first : first + BATCH, None] + torch.arange(t)  # (b, t)
                logits = model(stream[offsets])  # (b, t, 256)
                loss = F.cross_entropy(logits.view(-1, 256), stream[offsets + 1].view(-1))
                adam.zero_grad()
                loss.backward()
                adam.step()
            trained.append((windows, model.state_dict()))
        total = sum(n for n, _ in trained)
        for key in state:
            acc = torch.zeros_like(state[key])
            for n, trained_state in trained:
                acc = acc + n * trained_state[key]
            state[key] = acc / total
    return state


def same_bytes(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_byte_gpt_fedavg_on_stdlib_shards_is_plain_pytorch_bit_for_bit(tmp_path: Path) -> None:
    sources = []
    for part in range(TRAINERS):
        write_shard(tmp_path / f"shard{part}", part=part, num_parts=TRAINERS)
        sources.append(TextSource(kind="text", path=tmp_path / f"shard{part}"))
    ours = allmende_fedavg(sources)
    assert same_bytes(ours, plain_fedavg())
    assert not same_bytes(allmende_fedavg([sources[0], sources[0], sources[2]]), ours)
