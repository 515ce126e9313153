"""What every classification task shares: cross-entropy loss, accuracy and loss as metrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from allmende.learn.task import LocalData, Task


class Classifier(Task):
    """A task whose model maps a batch of inputs to class logits ``(batch, n_classes)``."""

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        inputs, targets = batch  # (batch, ...), (batch,)
        return F.cross_entropy(model(inputs), targets)

    def evaluate(self, model: nn.Module, data: LocalData) -> dict[str, float]:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            logits = model(data.inputs)  # (n, n_classes)
            loss = F.cross_entropy(logits, data.targets)
            correct = (logits.argmax(dim=1) == data.targets).sum()
        model.train(was_training)
        return {"accuracy": float(correct) / len(data), "loss": float(loss)}
