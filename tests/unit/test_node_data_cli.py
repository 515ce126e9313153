"""``allmende node init`` says what a trainer trains for; ``allmende node data`` shows the data."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from allmende.node.config import load_config, parse_config, write_config
from datafiles import IMAGE_OPTIONS, TABLE_OPTIONS, digits_rows, write_csv, write_pngs


def cli(*args: str) -> int:
    from allmende.cli.main import run

    try:
        run(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def init(home: Path, *extra: str) -> None:
    assert cli("node", "init", str(home), "--offline", "--insecure-plaintext-key", *extra) == 0


def test_a_new_trainer_trains_for_nobody_and_init_says_how_to_allow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init(tmp_path / "a")
    out = capsys.readouterr().out
    assert "trains for nobody yet" in out and "--allow-task" in out and "allowed_tasks" in out
    assert load_config(tmp_path / "a").trainer.allowed_tasks is None
    init(tmp_path / "b", "--allow-task", "tabular-mlp", "--allow-task", "image-cnn")
    out = capsys.readouterr().out
    assert "trains for tasks tabular-mlp, image-cnn" in out and "nobody" not in out
    assert load_config(tmp_path / "b").trainer.allowed_tasks == ["tabular-mlp", "image-cnn"]
    init(tmp_path / "c", "--allow-task", "no-such-task")
    assert "no-such-task not installed here" in capsys.readouterr().out
    init(tmp_path / "d", "--roles", "aggregator")
    assert "trains for" not in capsys.readouterr().out


def declare(home: Path, **dataset: str) -> None:
    """The operator edits ``[trainer.dataset]`` in node.toml."""
    raw = tomllib.loads((home / "node.toml").read_text())
    raw["trainer"]["dataset"] = dataset
    write_config(home, parse_config(raw))


def spec_file(tmp_path: Path, task: str, data: dict[str, object]) -> Path:
    path = tmp_path / f"{task}.toml"
    lines = [
        f'task = "{task}"', "rounds = 1", "min_trainers = 1", "max_trainers = 2", "quorum = 1",
        "reward_per_round = 0", "[optimizer]", "lr = 0.1", "[aggregation]", 'rule = "fedavg"',
        "[data]", *(f"{key} = {json.dumps(value)}" for key, value in data.items()),
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def test_node_data_shows_a_table_and_how_a_job_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    init(home)
    pixels, labels = digits_rows(0, 20)
    write_csv(home / "own.csv", pixels, labels)
    declare(home, kind="table", path="own.csv")
    capsys.readouterr()
    assert cli("node", "data", str(home), "--label", "label", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["kind"] == "table" and shown["examples"] == len(labels)
    assert shown["schema"]["label"] == "int64"
    assert sum(shown["labels"].values()) == len(labels) and shown["labels"]["3"] > 0
    spec = spec_file(tmp_path, "tabular-mlp", TABLE_OPTIONS)
    assert cli("node", "data", str(home), "--spec", str(spec)) == 0
    out = capsys.readouterr().out
    assert f"{len(labels)} examples" in out and "task tabular-mlp" in out and "inputs [64]" in out


def test_node_data_shows_an_image_folder(tmp_path: Path, capsys) -> None:
    home = tmp_path / "home"
    init(home)
    pixels, labels = digits_rows(1, 30)
    write_pngs(home / "imgs", pixels, labels)
    declare(home, kind="images", path="imgs")
    spec = spec_file(tmp_path, "image-cnn", IMAGE_OPTIONS)
    capsys.readouterr()
    assert cli("node", "data", str(home), "--spec", str(spec), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["examples"] == len(labels) and shown["schema"]["sizes"].startswith("8x8")
    assert shown["task"]["input_shape"] == [1, 8, 8]
    assert sum(shown["task"]["classes"].values()) == len(labels)


def test_node_data_names_the_bad_file_in_one_line(tmp_path: Path, capsys) -> None:
    home = tmp_path / "home"
    init(home)
    pixels, labels = digits_rows(0, 50)
    labels[3] = 11  # no such digit
    write_csv(home / "own.csv", pixels, labels)
    declare(home, kind="table", path="own.csv")
    spec = spec_file(tmp_path, "tabular-mlp", TABLE_OPTIONS)
    capsys.readouterr()
    assert cli("node", "data", str(home), "--spec", str(spec)) != 0
    err = capsys.readouterr().err.strip()
    assert "own.csv: line 5, column 'label': the label 11 is not one of the job's classes" in err
    assert len(err.splitlines()) == 1
    (home / "own.csv").unlink()
    assert cli("node", "data", str(home)) != 0
    err = capsys.readouterr().err.strip()
    assert "own.csv: no such file" in err and len(err.splitlines()) == 1


def test_node_data_has_help(capsys) -> None:
    assert cli("node", "data", "--help") == 0
    assert "without training" in capsys.readouterr().out
