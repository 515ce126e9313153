"""The operators' own data: declarations in node.toml, readers, the tasks' [data] options, and
one clear line naming the file and the row or field for every kind of bad data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from allmende.errors import ConfigError, DataError, TaskError
from allmende.learn.dataset import DatasetDecl, ImageSource, TableSource, TextSource
from allmende.learn.sources import read_texts, summarize
from allmende.learn.task import load_task
from allmende.node.config import parse_config
from datafiles import (
    IMAGE_OPTIONS,
    TABLE_OPTIONS,
    digits_rows,
    write_csv,
    write_parquet,
    write_pngs,
)

OFFLINE = {"chain": {"offline": True}}


def table(path: Path) -> TableSource:
    return TableSource(kind="table", path=path)


def images(path: Path) -> ImageSource:
    return ImageSource(kind="images", path=path)


def tabular(**changes: object):
    return load_task("tabular-mlp", data={**TABLE_OPTIONS, **changes})


def cnn(**changes: object):
    return load_task("image-cnn", data={**IMAGE_OPTIONS, **changes})


def one_line_error(call, *words: str) -> str:
    with pytest.raises(DataError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


# -- declarations ------------------------------------------------------------------------------


def test_a_dataset_without_kind_is_todays_partition() -> None:
    config = parse_config({**OFFLINE, "trainer": {"dataset": {"num_parts": 3, "part": 2}}})
    assert config.trainer.dataset == DatasetDecl(num_parts=3, part=2)


@pytest.mark.parametrize(
    ("dataset", "words"),
    [
        ({"kind": "tables", "path": "x.csv"}, ("trainer.dataset", "kind must be")),
        ({"kind": "table"}, ("trainer.dataset.path",)),
        ({"kind": "table", "path": "x.xlsx"}, ("cannot tell the format",)),
        ({"kind": "images", "path": "x", "parts": 2}, ("trainer.dataset.parts",)),
        ({"kind": "partition", "path": "x"}, ("trainer.dataset.path",)),
    ],
)
def test_bad_declarations_name_the_key(dataset: dict[str, object], words: tuple[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**OFFLINE, "trainer": {"dataset": dataset}})
    for word in words:
        assert word in str(caught.value)


def test_relative_paths_are_relative_to_the_node_home(tmp_path: Path) -> None:
    from allmende.node.config import load_config

    (tmp_path / "node.toml").write_text(
        '[chain]\noffline = true\n[trainer.dataset]\nkind = "table"\npath = "data/a.csv"\n'
    )
    assert load_config(tmp_path).trainer.dataset.path == tmp_path / "data" / "a.csv"


# -- tables ------------------------------------------------------------------------------------


def test_a_csv_and_the_same_parquet_give_the_same_normalised_tensors(tmp_path: Path) -> None:
    pixels, labels = digits_rows(0, 4)
    task = tabular()
    from_csv = task.load_data(table(write_csv(tmp_path / "a.csv", pixels, labels)))
    from_pq = task.load_data(table(write_parquet(tmp_path / "a.parquet", pixels, labels)))
    assert torch.equal(from_csv.inputs, from_pq.inputs)
    assert torch.equal(from_csv.targets, torch.from_numpy(labels))
    expected = ((pixels - 5.0) / 6.0).astype(np.float32)  # the spec's mean and std
    assert torch.equal(from_csv.inputs, torch.from_numpy(expected))
    assert task.model()(from_csv.inputs[:2]).shape == (2, 10)


def csv_with(tmp_path: Path, body: str, header: str = "p0,p1,label") -> TableSource:
    path = tmp_path / "bad.csv"
    path.write_text(header + "\n" + body)
    return table(path)


TWO = {"features": ["p0", "p1"], "mean": [0.0, 0.0], "std": [1.0, 1.0], "classes": ["a", "b"]}


@pytest.mark.parametrize(
    ("body", "header", "words"),
    [
        ("1,2,a\n3,4\n", "p0,p1,label", ("bad.csv", "line 3", "Expected 3 columns")),
        ("1,2,a\n3,x,b\n", "p0,p1,label", ("bad.csv", "line 3", "column 'p1'", "'x'")),
        ("1,2,a\n3,,b\n", "p0,p1,label", ("bad.csv", "line 3", "column 'p1'")),
        ("1,2,a\n3,4,c\n", "p0,p1,label", ("bad.csv", "line 3", "'c'", "not one of the job")),
        ("1,2,a\n", "p0,p2,label", ("bad.csv", "no column 'p1'", "data.features", "p0, p2")),
        ("1,2,a\n", "p0,p1,y", ("no column 'label'", "data.label")),
        ("", "p0,p1,label", ("bad.csv", "no rows")),
        ("1,inf,a\n", "p0,p1,label", ("line 2", "not a finite number")),
    ],
)
def test_bad_table_rows_are_one_line_naming_file_and_line(
    tmp_path: Path, body: str, header: str, words: tuple[str]
) -> None:
    source = csv_with(tmp_path, body, header)
    one_line_error(lambda: tabular(**TWO).load_data(source), *words)


def test_a_missing_table_and_a_broken_parquet_are_named(tmp_path: Path) -> None:
    one_line_error(lambda: tabular().load_data(table(tmp_path / "gone.csv")), "gone.csv", "no such")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    one_line_error(lambda: tabular().load_data(table(broken)), "broken.parquet", "PARQUET")


def test_a_float_label_column_is_refused_with_the_row(tmp_path: Path) -> None:
    source = csv_with(tmp_path, "1,2,1.0\n", "p0,p1,label")
    one_line_error(
        lambda: tabular(**{**TWO, "classes": ["0", "1"]}).load_data(source), "line 2", "1.0"
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"mean": [0.0]}, "[data]"),
        ({"std": [1.0] * 63 + [0.0]}, "[data]"),
        ({"features": []}, "'data.features'"),
        ({"classes": ["0"]}, "'data.classes'"),
        ({"hidden": 10**9}, "'data.hidden'"),
        ({"label": "p3"}, "[data]"),
        ({"normalise": True}, "'data.normalise'"),
    ],
)
def test_bad_table_options_are_refused_by_the_task(changes: dict, field: str) -> None:
    with pytest.raises(TaskError) as caught:
        tabular(**changes)
    message = str(caught.value)
    assert field in message and "tabular-mlp" in message and "\n" not in message


def test_a_task_that_needs_options_says_so_without_a_job() -> None:
    task = load_task("tabular-mlp")
    assert task.needs_options() and not load_task("digits-mlp").needs_options()
    with pytest.raises(TaskError, match=r"needs the job spec's \[data\]"):
        task.model()
    with pytest.raises(TaskError, match="no shared test split"):
        tabular().test_data()


def test_digits_refuses_options_and_a_table(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match=r"data\.classes"):
        load_task("digits-mlp", data={"classes": ["a"]})
    source = table(tmp_path / "a.csv")
    one_line_error(lambda: load_task("digits-mlp").load_data(source), "kind = 'table'")
    one_line_error(lambda: tabular().load_data(DatasetDecl()), "kind = 'partition'")


# -- image folders -----------------------------------------------------------------------------


def test_png_folders_load_as_the_pixels_they_hold(tmp_path: Path) -> None:
    pixels, labels = digits_rows(1, 8)
    root = write_pngs(tmp_path / "imgs", pixels, labels)
    data = cnn().load_data(images(root))
    assert data.inputs.shape == (len(labels), 1, 8, 8)
    order = np.lexsort((np.arange(len(labels)), labels))  # sorted by class, then file name
    assert torch.equal(data.targets, torch.from_numpy(labels[order]))
    expected = np.rint(pixels[order] * 255 / 16).astype(np.float32).reshape(-1, 1, 8, 8) / 255
    assert torch.equal(data.inputs, torch.from_numpy(expected))
    assert cnn().model()(data.inputs[:3]).shape == (3, 10)
    bigger = cnn(size=16, channels=3).load_data(images(root))
    assert bigger.inputs.shape == (len(labels), 3, 16, 16)


def test_bad_image_folders_are_one_line_naming_the_file(tmp_path: Path) -> None:
    pixels, labels = digits_rows(2, 40)
    root = write_pngs(tmp_path / "imgs", pixels, labels)
    one_line_error(lambda: cnn().load_data(images(tmp_path / "nope")), "nope", "no such folder")
    (root / "7" / "broken.png").write_bytes(b"\x89PNG not an image")
    one_line_error(lambda: cnn().load_data(images(root)), "broken.png", "cannot read the image")
    (root / "7" / "broken.png").unlink()
    (root / "7" / "notes.txt").write_text("hi")
    one_line_error(lambda: cnn().load_data(images(root)), "notes.txt", "not a PNG or JPEG")
    (root / "7" / "notes.txt").unlink()
    (root / "stray.png").write_bytes(b"")
    one_line_error(lambda: cnn().load_data(images(root)), "stray.png", "subfolder")
    (root / "stray.png").unlink()
    (root / "cat").mkdir()
    (root / "cat" / "a.png").write_bytes((root / "7").joinpath(next(iter(
        p.name for p in (root / "7").iterdir()))).read_bytes())  # fmt: skip
    one_line_error(lambda: cnn().load_data(images(root)), "'cat'", "data.classes")
    empty = tmp_path / "empty"
    (empty / "3").mkdir(parents=True)
    one_line_error(lambda: cnn().load_data(images(empty)), "empty", "no images")


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"size": 10}, "[data]"), ({"channels": 2}, "[data]"), ({"size": 4096}, "'data.size'")],
)
def test_bad_image_options_are_refused(changes: dict, field: str) -> None:
    with pytest.raises(TaskError) as caught:
        cnn(**changes)
    assert field in str(caught.value)


# -- text corpora ------------------------------------------------------------------------------


def test_text_folders_and_jsonl_read_in_a_fixed_order(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    (folder / "b").mkdir(parents=True)
    (folder / "b" / "two.txt").write_text("zwei")
    (folder / "a.txt").write_text("eins")
    texts = [text for _, text in read_texts(TextSource(kind="text", path=folder))]
    assert texts == ["eins", "zwei"]
    lines = tmp_path / "c.jsonl"
    lines.write_text(json.dumps({"text": "α"}) + "\n\n" + json.dumps({"text": "b"}) + "\n")
    summary = summarize(TextSource(kind="text", path=lines))
    assert (summary.examples, summary.nbytes) == (2, 3)


def test_bad_text_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    lines = tmp_path / "c.jsonl"
    lines.write_text('{"text": "ok"}\n{"text": \n')
    source = TextSource(kind="text", path=lines)
    one_line_error(lambda: list(read_texts(source)), "c.jsonl", "line 2", "not JSON")
    lines.write_text('{"text": "ok"}\n{"body": "x"}\n')
    one_line_error(lambda: list(read_texts(source)), "line 2", "'text'", "text_field")
    folder = tmp_path / "corpus"
    folder.mkdir()
    one_line_error(lambda: list(read_texts(TextSource(kind="text", path=folder))), "no text")
    (folder / "latin1.txt").write_bytes(b"caf\xe9")
    one_line_error(
        lambda: summarize(TextSource(kind="text", path=folder)), "latin1.txt", "byte 3", "UTF-8"
    )
    (folder / "latin1.txt").write_bytes(b"")
    one_line_error(lambda: summarize(TextSource(kind="text", path=folder)), "holds no text")


def test_summary_counts_rows_labels_and_schema(tmp_path: Path) -> None:
    pixels, labels = digits_rows(0, 10)
    path = write_csv(tmp_path / "a.csv", pixels, labels)
    summary = summarize(table(path), label="label")
    assert summary.examples == len(labels) and summary.nbytes == path.stat().st_size
    assert summary.schema["p0"] == "int64" and len(summary.schema) == 65
    values, counts = np.unique(labels, return_counts=True)
    assert summary.labels == {str(k): int(v) for k, v in zip(values, counts, strict=True)}
    shown = summarize(images(write_pngs(tmp_path / "i", pixels, labels)))
    assert shown.labels == summary.labels and shown.schema["sizes"] == f"8x8 ({len(labels)})"
