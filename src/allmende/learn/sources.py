"""Readers of the operator's own data: tables, image folders, text corpora.

Every reader checks what it reads and raises one :class:`~allmende.errors.DataError` naming the
file and the line, row or field at fault, with what to do about it. They return NumPy arrays (or
strings), never tensors: the tasks turn them into their inputs. Results come in a fixed order
(rows as stored; images and text files sorted by path), so the same files give the same bytes
on every run.

:func:`summarize` is what ``allmende node data`` shows, and what a node checks at start-up: it
reads all of the declared data once, so a bad file shows before the node joins any job.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from allmende.errors import DataError
from allmende.learn.dataset import (
    DatasetDecl,
    DataSource,
    ImageSource,
    TableSource,
    TextSource,
)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
# A JSONL line longer than this is refused (one document should not need more).
MAX_JSONL_LINE_BYTES = 64 * 1024 * 1024


# -- tables ----------------------------------------------------------------------------------------


def read_table(source: TableSource) -> Any:
    """The declared table as a ``pyarrow.Table``; DataError when it is missing, unreadable or
    has no rows."""
    import pyarrow as pa

    path = source.path
    _require_file(path, "table")
    try:
        if source.file_format == "csv":
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(use_threads=False),  # rows get their numbers
                parse_options=pacsv.ParseOptions(invalid_row_handler=lambda _row: "error"),
            )
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        detail = str(exc).replace("CSV parse error: Row #", "line ").splitlines()[0]
        raise DataError(
            f"{path}: cannot read it as {source.file_format.upper()} ({detail}); fix that line "
            "or declare the right format in [trainer.dataset]."
        ) from None
    if table.num_rows == 0:
        raise DataError(f"{path}: the table has no rows; declare a table with examples in it.")
    return table


def _where(source: TableSource, index: int) -> str:
    """Row ``index`` (0-based, of the data) as a person finds it: a CSV line, a Parquet row."""
    if source.file_format == "csv":
        return f"line {index + 2}"  # line 1 is the header
    return f"row {index + 1}"


def table_column(table: Any, name: str, *, source: TableSource, option: str) -> list[Any]:
    """The values of column ``name``; DataError naming the job spec's option that asked for it."""
    if name not in table.column_names:
        listed = ", ".join(table.column_names)
        raise DataError(
            f"{source.path}: has no column '{name}' (named by the job spec's data.{option}); "
            f"its columns are {listed}. Add the column or refuse jobs that need it."
        )
    return list(table.column(name).to_pylist())


def table_features(table: Any, columns: Sequence[str], *, source: TableSource) -> np.ndarray:
    """The feature columns as float64 ``(rows, len(columns))``; every value a finite number."""
    out = np.empty((table.num_rows, len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        for i, value in enumerate(table_column(table, name, source=source, option="features")):
            number = _as_number(value)
            if number is None:
                raise DataError(
                    f"{source.path}: {_where(source, i)}, column '{name}': {value!r} is not a "
                    "finite number; fix or remove that row."
                )
            out[i, j] = number
    return out


def _as_number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def table_labels(
    table: Any, column: str, classes: Sequence[str], *, source: TableSource
) -> np.ndarray:
    """The label column as class indices ``(rows,)`` int64, by position in ``classes``.

    Labels compare as text: an integer column's ``1`` is the class ``"1"``. A float column is
    refused (``1.0`` is no class name), as is an empty label or one outside ``classes``.
    """
    index = {name: i for i, name in enumerate(classes)}
    out = np.empty(table.num_rows, dtype=np.int64)
    for i, value in enumerate(table_column(table, column, source=source, option="label")):
        text = value if isinstance(value, str) else None
        if isinstance(value, int) and not isinstance(value, bool):
            text = str(value)
        if text is None or text not in index:
            shown = ", ".join(classes)
            raise DataError(
                f"{source.path}: {_where(source, i)}, column '{column}': the label {value!r} is "
                f"not one of the job's classes ({shown}); fix the row or refuse the job."
            )
        out[i] = index[text]
    return out


# -- image folders ---------------------------------------------------------------------------------


def image_files(source: ImageSource) -> list[tuple[Path, str]]:
    """Every image of the folder as (path, class name), sorted by class, then file name.

    Hidden files (a leading dot) are skipped; any other file that is not PNG or JPEG, or a file
    directly in the folder, is an error naming it.
    """
    root = source.path
    if not root.is_dir():
        raise DataError(
            f"{root}: no such folder; declare in [trainer.dataset] path a folder with one "
            "subfolder of images per class."
        )
    found: list[tuple[Path, str]] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            raise DataError(
                f"{entry}: a file directly in the image folder; put each image in the "
                "subfolder named after its class."
            )
        for image in sorted(entry.rglob("*")):
            if image.name.startswith(".") or image.is_dir():
                continue
            if image.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(
                    f"{image}: not a PNG or JPEG file (by its suffix); convert or remove it."
                )
            found.append((image, entry.name))
    if not found:
        raise DataError(
            f"{root}: holds no images; put PNG or JPEG files in one subfolder per class."
        )
    return found


def read_image(path: Path, *, size: int, channels: int) -> np.ndarray:
    """One image as float32 ``(channels, size, size)`` in [0, 1], resized where it differs."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            converted = image.convert("L" if channels == 1 else "RGB")
            if converted.size != (size, size):
                converted = converted.resize((size, size), Image.Resampling.BILINEAR)
            pixels = np.asarray(converted, dtype=np.float32) / 255.0  # (size, size[, 3])
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the image ({exc}); replace or remove it.") from None
    if channels == 1:
        return pixels[None, :, :]  # (1, size, size)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (3, size, size)


def read_images(
    source: ImageSource, *, classes: Sequence[str], size: int, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """(images ``(n, channels, size, size)`` float32, labels ``(n,)`` int64 by class position).

    A subfolder that is not one of ``classes`` is an error: the node would otherwise train on
    data the job did not ask for, or leave it out without the operator knowing.
    """
    index = {name: i for i, name in enumerate(classes)}
    files = image_files(source)
    for path, name in files:
        if name not in index:
            raise DataError(
                f"{path.parent}: the class '{name}' is not one of the job's data.classes "
                f"({', '.join(classes)}); move that folder out or refuse the job."
            )
    images = np.stack([read_image(path, size=size, channels=channels) for path, _ in files])
    labels = np.asarray([index[name] for _, name in files], dtype=np.int64)
    return images, labels


# -- text corpora ----------------------------------------------------------------------------------


def read_texts(source: TextSource) -> Iterator[tuple[str, str]]:
    """The corpus's documents as (where, text), in a fixed order: the files of a folder sorted
    by path, or the lines of a JSONL file. DataError naming the file (and line) on bad bytes."""
    path = source.path
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"{path}: holds no text files; declare a corpus with text in it.")
        for file in files:
            yield str(file), _read_utf8(file)
        return
    _require_file(path, "text corpus")
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if len(raw) > MAX_JSONL_LINE_BYTES:
                raise DataError(
                    f"{path}: line {number} is over {MAX_JSONL_LINE_BYTES} bytes; split it."
                )
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise DataError(
                    f"{path}: line {number} is not JSON ({exc}); fix or remove that line."
                ) from None
            text = record.get(source.text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise DataError(
                    f"{path}: line {number} has no string field '{source.text_field}'; give "
                    "every line one, or declare the right text_field in [trainer.dataset]."
                )
            yield f"{path}:{number}", text


def _read_utf8(file: Path) -> str:
    data = file.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{file}: byte {exc.start} is not UTF-8 text; convert the file or remove it."
        ) from None


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataError(
            f"{path}: no such file; declare in [trainer.dataset] path the {what} this node "
            "trains on."
        )


# -- what a node would train on ------------------------------------------------------------------


@dataclass
class Summary:
    """What ``allmende node data`` prints: the source, its size, schema and label counts."""

    kind: str
    location: str
    examples: int
    nbytes: int
    schema: dict[str, str] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "location": self.location,
            "examples": self.examples,
            "bytes": self.nbytes,
            "schema": self.schema,
            "labels": self.labels,
            "notes": self.notes,
        }


def summarize(source: DataSource, *, label: str | None = None) -> Summary:
    """Read the whole declared source once and describe it; DataError where it is bad.

    ``label``: for a table, the column whose value counts to show.
    """
    if isinstance(source, DatasetDecl):
        return Summary(
            kind="partition",
            location=f"part {source.part} of {source.num_parts} ({source.partition} partition, "
            f"seed {source.seed}) of the data the job's task ships",
            examples=0,
            nbytes=0,
            notes=["the task ships this data; how many examples depends on the task"],
        )
    if isinstance(source, TableSource):
        table = read_table(source)
        counts: dict[str, int] = {}
        if label is not None:
            values = table_column(table, label, source=source, option="label")
            counts = {str(k): v for k, v in sorted(Counter(map(str, values)).items())}
        return Summary(
            kind="table",
            location=str(source.path),
            examples=table.num_rows,
            nbytes=source.path.stat().st_size,
            schema={f.name: str(f.type) for f in table.schema},
            labels=counts,
        )
    if isinstance(source, ImageSource):
        from PIL import Image, UnidentifiedImageError

        files = image_files(source)
        sizes: Counter[str] = Counter()
        modes: Counter[str] = Counter()
        for path, _ in files:
            try:
                with Image.open(path) as image:
                    image.verify()
                    sizes[f"{image.size[0]}x{image.size[1]}"] += 1
                    modes[image.mode] += 1
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise DataError(
                    f"{path}: cannot read the image ({exc}); replace or remove it."
                ) from None
        return Summary(
            kind="images",
            location=str(source.path),
            examples=len(files),
            nbytes=sum(path.stat().st_size for path, _ in files),
            schema={"sizes": ", ".join(f"{k} ({v})" for k, v in sizes.most_common()),
                    "modes": ", ".join(f"{k} ({v})" for k, v in modes.most_common())},
            labels=dict(sorted(Counter(name for _, name in files).items())),
        )  # fmt: skip
    documents = 0
    nbytes = 0
    for _, text in read_texts(source):
        documents += 1
        nbytes += len(text.encode("utf-8"))
    if nbytes == 0:
        raise DataError(f"{source.path}: the corpus holds no text; declare one with text in it.")
    return Summary(
        kind="text",
        location=str(source.path),
        examples=documents,
        nbytes=nbytes,
        schema={"text_field": source.text_field} if source.path.is_file() else {},
        notes=[f"{documents} documents, {nbytes} bytes of UTF-8 text"],
    )
