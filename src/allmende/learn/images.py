"""``image-cnn``: a small convolutional classifier on image folders the operators declare.

Each node declares a folder with one subfolder of PNG/JPEG images per class
(``[trainer.dataset] kind = "images"``). The job spec's ``[data]`` table names the classes (the
subfolder names, in the order of the model's outputs), the side every image is resized to, and
whether images are read as grey (1 channel) or colour (3)::

    task = "image-cnn"
    [data]
    classes = ["cat", "dog"]
    size = 32
    channels = 3
    width = 16

Pixels are scaled to [0, 1] and nothing else: the normalisation is fixed in code, so every node
reads the same image as the same tensor. The model::

    (b, c, s, s) -conv3x3, ReLU, maxpool2-> (b, w, s/2, s/2) -conv3x3, ReLU, maxpool2->
    (b, 2w, s/4, s/4) -flatten, linear-> (b, classes)

A subfolder outside ``classes``, a file that is no image, an empty folder: an error naming the
file. No shared test split: evaluate with :meth:`ImageCNN.load_data` of a test folder.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import nn

from allmende.errors import DataError, TaskError
from allmende.learn.classify import Classifier
from allmende.learn.dataset import DataSource, ImageSource
from allmende.learn.sources import read_images
from allmende.learn.task import LocalData, TaskOptions

# Bounds on what a job may ask for (a job owner may be hostile; every trainer builds the model
# and holds its images at this size in memory).
MAX_SIZE = 128
MAX_WIDTH = 128
MAX_CLASSES = 1000
DEFAULT_SIZE = 28
DEFAULT_WIDTH = 16


class ImageOptions(TaskOptions):
    """The ``[data]`` table of an ``image-cnn`` job."""

    classes: list[str] = Field(min_length=2, max_length=MAX_CLASSES)
    """The class subfolders, in the order of the model's outputs."""
    size: int = Field(default=DEFAULT_SIZE, ge=4, le=MAX_SIZE)
    """Every image is resized to ``size`` x ``size`` pixels (a multiple of 4)."""
    channels: int = Field(default=1)
    """1: read as grey; 3: as RGB."""
    width: int = Field(default=DEFAULT_WIDTH, ge=1, le=MAX_WIDTH)
    """Channels of the first convolution (the second has twice as many)."""

    @model_validator(mode="after")
    def _consistent(self) -> ImageOptions:
        if self.size % 4:
            raise ValueError(f"size {self.size} is not a multiple of 4 (the model pools twice)")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), not {self.channels}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes names one class twice; list each once")
        return self


class ImageCNN(Classifier):
    """Two 3x3 convolutions with ReLU and 2x2 max-pooling, then a linear layer; cross-entropy."""

    name = "image-cnn"
    version = "1.0.0"
    Options = ImageOptions

    @property
    def images(self) -> ImageOptions:
        options = self.configured()
        assert isinstance(options, ImageOptions)
        return options

    def model(self) -> nn.Module:
        o = self.images
        side = o.size // 4
        return nn.Sequential(
            nn.Conv2d(o.channels, o.width, kernel_size=3, padding=1),  # (b, w, s, s)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (b, w, s/2, s/2)
            nn.Conv2d(o.width, 2 * o.width, kernel_size=3, padding=1),  # (b, 2w, s/2, s/2)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (b, 2w, s/4, s/4)
            nn.Flatten(),  # (b, 2w * s/4 * s/4)
            nn.Linear(2 * o.width * side * side, len(o.classes)),  # (b, classes)
        )

    def load_data(self, dataset: DataSource) -> LocalData:
        if not isinstance(dataset, ImageSource):
            raise DataError(
                f"Task 'image-cnn' trains on an image folder, but this node declares "
                f"kind = '{dataset.kind}' in [trainer.dataset]; declare kind = \"images\" and "
                "the path of a folder with one subfolder per class."
            )
        o = self.images
        images, labels = read_images(dataset, classes=o.classes, size=o.size, channels=o.channels)
        return LocalData(inputs=torch.from_numpy(images), targets=torch.from_numpy(labels))

    def test_data(self) -> LocalData:
        raise TaskError(
            "Task 'image-cnn' has no shared test split: the data is the operators'. Evaluate a "
            "model on a test folder with load_data."
        )
