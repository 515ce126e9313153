"""``byte-gpt``: a small GPT over bytes, trained on text corpora the operators declare.

Each node declares a corpus (``[trainer.dataset] kind = "text"``: a folder of UTF-8 files, or
JSONL with a text field). The job spec's ``[data]`` table sets the model's size and how much a
trainer trains per local epoch::

    task = "byte-gpt"
    [data]
    n_layer = 2          # transformer blocks
    n_head = 4           # attention heads (n_embd must be a multiple)
    n_embd = 128         # embedding width
    context = 64         # bytes the model sees at once
    windows = 512        # random windows of context + 1 bytes per local epoch
    holdout = 0.1        # the last tenth of every document is held out for evaluation

The defaults train a round in a few seconds on 2 CPU cores (about 0.4 M parameters). A preset
for a GPU is ``examples/jobs/byte-gpt-gpu.toml`` (6 layers, 384 wide, context 256: about 11 M).

**Split.** The last ``holdout`` of every document's bytes (at least one byte) is held out; the
rest, concatenated in the corpus's fixed order, is the training stream. The split depends only
on the bytes, so every run of a node holds out the same text.

**Batches.** A local epoch is ``windows`` windows of ``context + 1`` bytes whose starts are drawn
uniformly from the training stream with the round's derived seed (see
:func:`~allmende.learn.train.derive_seed`); inputs are a window's first ``context`` bytes,
targets the same shifted by one. Every trainer trains ``windows`` windows a round, so FedAvg
weighs trainers equally.

**Metric.** :meth:`ByteGPTTask.evaluate` gives ``bits_per_byte`` (cross-entropy in bits) on
non-overlapping windows of a held-out stream (at most ``eval_windows`` of them, from its start),
with ``loss`` in nats and next-byte ``accuracy``.

**Bounds.** A job owner may be hostile and every trainer builds the model it asks for: the
options are bounded one by one and the model to at most :data:`MAX_PARAMS` parameters; a batch
whose activations would take more than :data:`MAX_ACTIVATION_BYTES` is refused when training
starts (the job's ``batch_size`` is not part of ``[data]``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from allmende.errors import DataError, TaskError
from allmende.learn.dataset import DataSource, TextSource
from allmende.learn.gpt import VOCAB, ByteGPT, GPTConfig, n_params
from allmende.learn.sources import read_texts
from allmende.learn.task import LocalData, Task, TaskOptions

DEFAULT_N_LAYER = 2
DEFAULT_N_HEAD = 4
DEFAULT_N_EMBD = 128
DEFAULT_CONTEXT = 64
DEFAULT_WINDOWS = 512
DEFAULT_HOLDOUT = 0.1
DEFAULT_EVAL_WINDOWS = 64
MAX_N_LAYER = 48
MAX_N_HEAD = 64
MAX_N_EMBD = 4096
MAX_CONTEXT = 4096
MAX_WINDOWS = 1_000_000
MAX_EVAL_WINDOWS = 100_000
MAX_PARAMS = 200_000_000  # 800 MB of float32; with gradients and Adam's state, about 3.2 GB
MAX_ACTIVATION_BYTES = 8 * 2**30  # what one training batch may keep for its backward pass
MAX_CORPUS_BYTES = 2 * 2**30  # a node holds its training stream in memory, one byte a byte
EVAL_BATCH = 16  # windows evaluated at once
LN2 = math.log(2.0)


class TextOptions(TaskOptions):
    """The ``[data]`` table of a ``byte-gpt`` job (every trainer builds this model)."""

    n_layer: int = Field(default=DEFAULT_N_LAYER, ge=1, le=MAX_N_LAYER)
    n_head: int = Field(default=DEFAULT_N_HEAD, ge=1, le=MAX_N_HEAD)
    n_embd: int = Field(default=DEFAULT_N_EMBD, ge=8, le=MAX_N_EMBD)
    context: int = Field(default=DEFAULT_CONTEXT, ge=2, le=MAX_CONTEXT)
    windows: int = Field(default=DEFAULT_WINDOWS, ge=1, le=MAX_WINDOWS)
    """Windows of ``context + 1`` bytes a trainer trains on per local epoch."""
    holdout: float = Field(default=DEFAULT_HOLDOUT, gt=0.0, lt=0.5)
    """The share of every document, from its end, held out for evaluation."""
    eval_windows: int = Field(default=DEFAULT_EVAL_WINDOWS, ge=1, le=MAX_EVAL_WINDOWS)
    """At most this many windows of the held-out stream are evaluated."""

    @model_validator(mode="after")
    def _consistent(self) -> TextOptions:
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}; every head "
                "needs the same width"
            )
        size = n_params(self.gpt)
        if size > MAX_PARAMS:
            raise ValueError(
                f"the model would have {size:,} parameters, more than the {MAX_PARAMS:,} a "
                "trainer builds; ask for fewer layers or a narrower model"
            )
        return self

    @property
    def gpt(self) -> GPTConfig:
        return GPTConfig(
            n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd, context=self.context
        )


def activation_bytes(options: TextOptions, batch_size: int) -> int:
    """A generous estimate of what a training batch keeps for backward: per layer and token,
    about 20 activations of ``n_embd`` floats, and the attention weights where they exist."""
    tokens = batch_size * options.context
    per_layer = tokens * 20 * options.n_embd + batch_size * options.n_head * options.context**2
    return 4 * options.n_layer * per_layer


@dataclass(frozen=True)
class ByteWindows(LocalData):
    """A byte stream seen as windows: ``inputs`` ``(n - 1,)`` uint8 is the stream without its
    last byte, ``targets`` the same shifted by one. An index is a window's start; ``len`` is
    the number of windows a local epoch draws."""

    context: int = 1
    windows: int = 1

    @property
    def n_starts(self) -> int:
        """How many windows of ``context`` inputs fit in the stream."""
        return int(self.inputs.shape[0]) - self.context + 1

    def __len__(self) -> int:
        return self.windows

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Windows starting at ``indices`` ``(b,)``: inputs and targets ``(b, context)`` int64."""
        offsets = indices[:, None] + torch.arange(self.context)[None, :]  # (b, context)
        return self.inputs[offsets].long(), self.targets[offsets].long()


@dataclass(frozen=True)
class Split:
    """A corpus split into a training and a held-out stream of bytes."""

    train: bytes
    heldout: bytes
    documents: int


def split_corpus(source: TextSource, *, holdout: float) -> Split:
    """Hold out the last ``holdout`` of every document (at least one byte of each); both parts
    concatenated in the corpus's order. DataError when the corpus is too large or empty."""
    train: list[bytes] = []
    heldout: list[bytes] = []
    total = 0
    documents = 0
    for _, text in read_texts(source):
        data = text.encode("utf-8")
        if not data:
            continue
        total += len(data)
        if total > MAX_CORPUS_BYTES:
            raise DataError(
                f"{source.path}: the corpus is over {MAX_CORPUS_BYTES // 2**30} GiB; declare a "
                "smaller one (a node holds its training text in memory)."
            )
        cut = len(data) - max(1, math.floor(len(data) * holdout))
        train.append(data[:cut])
        heldout.append(data[cut:])
        documents += 1
    return Split(train=b"".join(train), heldout=b"".join(heldout), documents=documents)


def as_windows(stream: bytes, *, context: int, windows: int, what: str) -> ByteWindows:
    """``stream`` as :class:`ByteWindows`; DataError when it holds no window of ``context + 1``
    bytes."""
    if len(stream) < context + 1:
        raise DataError(
            f"{what} holds {len(stream)} bytes, fewer than one window of {context + 1} (the "
            "job's data.context + 1); declare more text or refuse the job."
        )
    data = torch.frombuffer(bytearray(stream), dtype=torch.uint8)  # (n,)
    return ByteWindows(inputs=data[:-1], targets=data[1:], context=context, windows=windows)


class ByteGPTTask(Task):
    """nanoGPT-style decoder over bytes; cross-entropy of the next byte; bits per byte."""

    name = "byte-gpt"
    version = "1.0.0"
    Options = TextOptions

    @property
    def text(self) -> TextOptions:
        options = self.configured()
        assert isinstance(options, TextOptions)
        return options

    def model(self) -> nn.Module:
        return ByteGPT(self.text.gpt)

    def _source(self, dataset: DataSource) -> TextSource:
        if not isinstance(dataset, TextSource):
            raise DataError(
                f"Task 'byte-gpt' trains on text, but this node declares kind = "
                f"'{dataset.kind}' in [trainer.dataset]; declare kind = \"text\" and the path "
                "of a folder of text files or a JSONL file."
            )
        return dataset

    def load_data(self, dataset: DataSource) -> ByteWindows:
        """The training stream of the node's corpus (all but the held-out part)."""
        source = self._source(dataset)
        o = self.text
        split = split_corpus(source, holdout=o.holdout)
        what = f"{source.path}: the training part of the corpus"
        return as_windows(split.train, context=o.context, windows=o.windows, what=what)

    def heldout_data(self, dataset: DataSource) -> ByteWindows:
        """The held-out stream of the node's corpus, as :meth:`evaluate` reads it."""
        source = self._source(dataset)
        o = self.text
        split = split_corpus(source, holdout=o.holdout)
        what = f"{source.path}: the held-out part of the corpus"
        return as_windows(split.heldout, context=o.context, windows=o.eval_windows, what=what)

    def test_data(self) -> LocalData:
        raise TaskError(
            "Task 'byte-gpt' has no shared test split: the text is the operators'. Evaluate a "
            "model on a corpus's held-out part with heldout_data."
        )

    def epoch_batches(
        self, data: LocalData, *, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """``len(data)`` windows with starts drawn uniformly from ``generator``, in batches."""
        if not isinstance(data, ByteWindows) or data.context != self.text.context:
            raise TaskError(
                "Task 'byte-gpt' trains on ByteWindows of the job's context (from load_data)."
            )
        needed = activation_bytes(self.text, batch_size)
        if needed > MAX_ACTIVATION_BYTES:
            raise TaskError(
                f"Task 'byte-gpt': batch_size {batch_size} with this model needs about "
                f"{needed / 2**30:.1f} GiB of activations, more than the "
                f"{MAX_ACTIVATION_BYTES // 2**30} GiB a trainer gives a batch; the job asks too "
                "much, so it is refused (a smaller batch_size or context would fit)."
            )
        starts = torch.randint(0, data.n_starts, (len(data),), generator=generator)  # (windows,)
        for start in range(0, len(data), batch_size):
            yield data.batch(starts[start : start + batch_size])

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        inputs, targets = batch  # (b, t), (b, t)
        logits = model(inputs)  # (b, t, 256)
        return F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1))

    def evaluate(self, model: nn.Module, data: LocalData) -> dict[str, float]:
        """Bits per byte, loss (nats) and accuracy on the first ``len(data)`` non-overlapping
        windows of a held-out stream (fewer where the stream is shorter)."""
        if not isinstance(data, ByteWindows):
            raise TaskError("Task 'byte-gpt' evaluates ByteWindows (from heldout_data).")
        n = min(len(data), (data.n_starts - 1) // data.context + 1)  # windows that fit
        starts = torch.arange(n) * data.context  # (n,)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        total = 0.0
        correct = 0
        count = 0
        with torch.no_grad():
            for first in range(0, n, EVAL_BATCH):
                inputs, targets = data.batch(starts[first : first + EVAL_BATCH])  # (b, t)
                inputs, targets = inputs.to(device), targets.to(device)
                logits = model(inputs)  # (b, t, 256)
                flat = logits.reshape(-1, VOCAB)
                total += float(F.cross_entropy(flat, targets.reshape(-1), reduction="sum"))
                correct += int((flat.argmax(dim=1) == targets.reshape(-1)).sum())
                count += targets.numel()
        model.train(was_training)
        loss = total / count
        return {"bits_per_byte": loss / LN2, "loss": loss, "accuracy": correct / count}
