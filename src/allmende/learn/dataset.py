"""The node operator's declaration of its local data: pydantic only, no torch.

Node configuration (``node.toml``) holds one :data:`DataSource` under ``[trainer.dataset]``, and
reading it must stay cheap: ``allmende node init`` and the other light commands never import
torch, pyarrow or Pillow. The readers are in :mod:`allmende.learn.sources`.

``kind`` picks the form; left out, it is ``"partition"`` (the form of earlier releases)::

    [trainer.dataset]            # one part of a seeded partition of the data a task ships
    partition = "dirichlet"
    num_parts = 6
    part = 2

    [trainer.dataset]            # the operator's own table: CSV or Parquet
    kind = "table"
    path = "/data/patients.csv"

    [trainer.dataset]            # a folder with one subfolder of PNG/JPEG images per class
    kind = "images"
    path = "/data/scans"

    [trainer.dataset]            # a folder of UTF-8 text files, or JSONL with a text field
    kind = "text"
    path = "/data/corpus.jsonl"
    text_field = "text"

Relative paths are relative to the node home. What a job may say about the data (which columns
are features, which classes exist, ...) is not declared here: it is in the job spec's ``[data]``
table, validated by the job's task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

DEFAULT_ALPHA = 0.5
DEFAULT_PARTITION_SEED = 0
DEFAULT_TEXT_FIELD = "text"
DATA_KINDS = ("partition", "table", "images", "text")
TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class _Decl(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DatasetDecl(_Decl):
    """One part of a seeded partition of the training set a task ships (``kind = "partition"``).

    The node's data is ``part`` of ``num_parts``. Nodes of one demo network must agree on
    ``partition``, ``alpha``, ``num_parts`` and ``seed`` (otherwise their parts overlap), and
    each must pick a different ``part``.
    """

    kind: Literal["partition"] = "partition"
    partition: Literal["iid", "dirichlet"] = "iid"
    alpha: float = Field(default=DEFAULT_ALPHA, gt=0.0)
    """Dirichlet concentration over labels; smaller means more skewed parts (non-IID)."""
    num_parts: int = Field(default=1, ge=1)
    part: int = Field(default=0, ge=0)
    seed: int = Field(default=DEFAULT_PARTITION_SEED, ge=0)

    @model_validator(mode="after")
    def _part_in_range(self) -> DatasetDecl:
        if self.part >= self.num_parts:
            raise ValueError(
                f"part {self.part} does not exist when num_parts is {self.num_parts}; "
                f"choose a part between 0 and {self.num_parts - 1}"
            )
        return self


class _FileSource(_Decl):
    path: Path = Field(strict=False)
    """The file or folder; relative paths are relative to the node home."""

    def resolved(self, home: Path) -> _FileSource:
        """This declaration with ``path`` made absolute against the node home ``home``."""
        if self.path.is_absolute():
            return self
        return self.model_copy(update={"path": (Path(home) / self.path).resolve()})


class TableSource(_FileSource):
    """A table of examples, one a row: CSV (with a header row) or Parquet (``kind = "table"``).

    ``format`` defaults to what the file's suffix says (``.csv``, ``.parquet``/``.pq``).
    """

    kind: Literal["table"]
    format: Literal["csv", "parquet"] | None = None

    @model_validator(mode="after")
    def _known_format(self) -> TableSource:
        if self.format is None and self.path.suffix.lower() not in TABLE_SUFFIXES:
            raise ValueError(
                f"cannot tell the format of {self.path} from its suffix; name it .csv or "
                ".parquet, or set format = 'csv' or 'parquet'"
            )
        return self

    @property
    def file_format(self) -> str:
        return self.format or TABLE_SUFFIXES[self.path.suffix.lower()]


class ImageSource(_FileSource):
    """A folder with one subfolder per class, each holding PNG or JPEG images
    (``kind = "images"``); the subfolder's name is the class label."""

    kind: Literal["images"]


class TextSource(_FileSource):
    """A text corpus (``kind = "text"``): a folder of UTF-8 text files (read recursively, in
    path order), or a JSONL file whose lines are objects with a string ``text_field``."""

    kind: Literal["text"]
    text_field: str = Field(default=DEFAULT_TEXT_FIELD, min_length=1)


def _kind_of(value: Any) -> str:
    """The union's tag: ``kind``, or ``"partition"`` where it is left out."""
    if isinstance(value, dict):
        return str(value.get("kind", "partition"))
    return str(getattr(value, "kind", "partition"))


DataSource = Annotated[
    Annotated[DatasetDecl, Tag("partition")]
    | Annotated[TableSource, Tag("table")]
    | Annotated[ImageSource, Tag("images")]
    | Annotated[TextSource, Tag("text")],
    Discriminator(
        _kind_of,
        custom_error_type="data_kind",
        custom_error_message="kind must be 'partition', 'table', 'images' or 'text'",
    ),
]
"""What ``[trainer.dataset]`` holds: one of the four declarations, told apart by ``kind``."""

FileSource = TableSource | ImageSource | TextSource
