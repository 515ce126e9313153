"""``byte-gpt``: the model, the corpus split and windows, the bounds on a job's options, the
standard-library shards, devices, and ``allmende model sample``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from allmende.errors import ConfigError, DataError, TaskError
from allmende.learn.dataset import DatasetDecl, TextSource
from allmende.learn.devices import resolve_device
from allmende.learn.gpt import ByteGPT, GPTConfig, n_params
from allmende.learn.stdlib_text import shard_files, stdlib_files, write_shard
from allmende.learn.task import load_task, seeded_model, seeded_state
from allmende.learn.text import ByteWindows, split_corpus
from allmende.learn.train import train_local
from allmende.node.config import parse_config
from allmende.store.codec import encode_state

TINY = {"n_layer": 2, "n_head": 2, "n_embd": 16, "context": 8, "windows": 8, "eval_windows": 4}


def corpus(root: Path, texts: dict[str, str]) -> TextSource:
    for name, text in texts.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return TextSource(kind="text", path=root)


# -- the model -------------------------------------------------------------------------------------


def test_the_model_maps_bytes_to_next_byte_logits_with_tied_weights() -> None:
    config = GPTConfig(n_layer=2, n_head=2, n_embd=16, context=8)
    torch.manual_seed(0)
    model = ByteGPT(config)
    logits = model(torch.randint(0, 256, (3, 5)))
    assert logits.shape == (3, 5, 256)
    assert sum(p.numel() for p in model.parameters()) == n_params(config)
    assert "wte.weight" in model.state_dict() and not any("head" in k for k in model.state_dict())
    with pytest.raises(ValueError, match="context of 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_a_later_byte_never_changes_an_earlier_output() -> None:
    torch.manual_seed(1)
    model = ByteGPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, context=16)).eval()
    x = torch.randint(0, 256, (2, 16))
    y = x.clone()
    y[:, 9:] = torch.randint(0, 256, (2, 7))  # change every byte from position 9 on
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[:, :9], b[:, :9])
    assert not torch.equal(a[:, 9:], b[:, 9:])


def test_sampling_is_seeded_and_temperature_zero_is_greedy() -> None:
    model = seeded_model(load_task("byte-gpt", data=TINY), seed=2)
    assert isinstance(model, ByteGPT)
    prompt = torch.tensor([list(b"def ")])
    gen = [model.generate(prompt, 20, temperature=1.0, generator=torch.Generator().manual_seed(s))
           for s in (5, 5, 6)]  # fmt: skip
    assert torch.equal(gen[0], gen[1]) and not torch.equal(gen[0], gen[2])
    assert gen[0].shape == (1, 24) and torch.equal(gen[0][:, :4], prompt)
    greedy = model.generate(prompt, 3, temperature=0, generator=torch.Generator())
    with torch.no_grad():
        first = model(prompt)[0, -1].argmax()
    assert greedy[0, 4] == first


# -- split and windows -----------------------------------------------------------------------------


def test_the_last_share_of_every_document_is_held_out(tmp_path: Path) -> None:
    source = corpus(tmp_path, {"a.txt": "0123456789", "b/c.txt": "abcdefghijklmnopqrst",
                               "d.txt": "xy"})  # fmt: skip
    split = split_corpus(source, holdout=0.1)
    assert split.train == b"012345678" + b"abcdefghijklmnopqr" + b"x"  # files in path order
    assert split.heldout == b"9" + b"st" + b"y"
    assert split_corpus(source, holdout=0.1) == split
    assert split.documents == 3


def test_windows_are_drawn_from_the_seed_and_targets_are_shifted_by_one(tmp_path: Path) -> None:
    task = load_task("byte-gpt", data=TINY)
    data = task.load_data(
        corpus(tmp_path, {"a.txt": "".join(chr(65 + i % 26) for i in range(300))})
    )
    assert isinstance(data, ByteWindows) and len(data) == 8
    batches = list(
        task.epoch_batches(data, batch_size=3, generator=torch.Generator().manual_seed(4))
    )
    assert [b[0].shape for b in batches] == [(3, 8), (3, 8), (2, 8)]
    for inputs, targets in batches:
        assert torch.equal(inputs[:, 1:], targets[:, :-1])
        assert torch.equal((inputs + 1 - 65) % 26, (targets - 65) % 26)  # the next letter
    again = list(task.epoch_batches(data, batch_size=3, generator=torch.Generator().manual_seed(4)))
    other = list(task.epoch_batches(data, batch_size=3, generator=torch.Generator().manual_seed(5)))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    assert not torch.equal(batches[0][0], other[0][0])


def test_training_lowers_bits_per_byte_on_the_held_out_part(tmp_path: Path) -> None:
    task = load_task("byte-gpt", data={**TINY, "windows": 64})
    source = corpus(tmp_path, {f"{i}.txt": "the quick brown fox jumps. " * 20 for i in range(4)})
    train, heldout = task.load_data(source), task.heldout_data(source)
    state = seeded_state(task, seed=0)
    model = task.model()
    model.load_state_dict(state)
    before = task.evaluate(model, heldout)
    state, examples, _ = train_local(task, state, train, epochs=2, batch_size=16, lr=0.01,
                                     optimizer="adam", momentum=0.9, seed=3)  # fmt: skip
    model.load_state_dict(state)
    after = task.evaluate(model, heldout)
    assert examples == 64
    assert before["bits_per_byte"] == pytest.approx(before["loss"] / math.log(2))
    assert 0 < after["bits_per_byte"] < before["bits_per_byte"] - 1


# -- what a job or an operator may get wrong -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"n_embd": 30, "n_head": 4},
            r"\[data\] is refused .*n_embd 30 is not a multiple of n_head",
        ),
        ({"n_layer": 48, "n_embd": 4096, "n_head": 32}, "parameters, more than the 200,000,000"),
        ({"context": 100_000}, "'data.context' .*less than or equal to 4096"),
        ({"windows": 0}, "'data.windows'"),
        ({"holdout": 0.7}, "'data.holdout'"),
        ({"layers": 2}, "'data.layers' .*Extra inputs are not permitted"),
        ({"n_layer": "2"}, "'data.n_layer' .*valid integer"),
    ],
)
def test_a_bad_or_oversized_model_is_refused_in_one_line(data: dict, message: str) -> None:
    with pytest.raises(TaskError, match=message) as caught:
        load_task("byte-gpt", data=data)
    assert "\n" not in str(caught.value) and "byte-gpt" in str(caught.value)


def test_a_batch_too_large_for_memory_is_refused_before_training(tmp_path: Path) -> None:
    task = load_task("byte-gpt", data={**TINY, "n_embd": 1024, "n_head": 8, "context": 2048})
    data = task.load_data(corpus(tmp_path, {"a.txt": "x" * 5000}))
    with pytest.raises(TaskError, match=r"batch_size 512 .* GiB of activations") as caught:
        next(task.epoch_batches(data, batch_size=512, generator=torch.Generator()))
    assert "\n" not in str(caught.value)


def test_bad_corpora_are_named_in_one_line(tmp_path: Path) -> None:
    task = load_task("byte-gpt", data=TINY)
    with pytest.raises(
        DataError, match="trains on text, but this node declares kind = 'partition'"
    ):
        task.load_data(DatasetDecl())
    short = corpus(tmp_path / "short", {"a.txt": "tiny text"})
    with pytest.raises(DataError, match=r"short: the training part .* fewer than one window of 9"):
        task.load_data(short)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.txt").write_bytes(b"ok\xff")
    with pytest.raises(DataError, match=r"x.txt: byte 2 is not UTF-8"):
        task.load_data(TextSource(kind="text", path=tmp_path / "bad"))
    with pytest.raises(TaskError, match="no shared test split"):
        task.test_data()


# -- the standard library's shards -----------------------------------------------------------------


def test_stdlib_shards_are_disjoint_cover_the_corpus_and_are_stable() -> None:
    files = stdlib_files()
    assert len(files) > 300 and "os.py" in files
    assert not any(part in ("test", "site-packages") for f in files for part in f.split("/"))
    shards = [shard_files(part, 4) for part in range(4)]
    assert sorted(f for shard in shards for f in shard) == files
    assert all(len(shard) > len(files) // 8 for shard in shards)
    assert shard_files(1, 4) == shards[1]
    with pytest.raises(ConfigError, match="part 4 does not exist when num_parts is 4"):
        shard_files(4, 4)


def test_a_node_home_gets_its_shard_declared_as_its_corpus(tmp_path: Path, capsys) -> None:
    from test_node_data_cli import cli, init

    home = tmp_path / "node"
    init(home, "--allow-task", "byte-gpt")
    assert cli("node", "stdlib-shard", str(home), "--part", "2", "--num-parts", "8") == 0
    assert "wrote shard 2 of 8" in capsys.readouterr().out
    from allmende.node.config import load_config

    source = load_config(home).trainer.dataset
    assert isinstance(source, TextSource) and source.path == (home / "corpus").resolve()
    written = sorted(p.relative_to(home / "corpus").as_posix()
                     for p in (home / "corpus").rglob("*.py"))  # fmt: skip
    assert written == shard_files(2, 8)
    assert cli("node", "stdlib-shard", str(home), "--part", "2", "--num-parts", "8") == 2
    assert "is not empty" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="not empty"):
        write_shard(home / "corpus", part=0, num_parts=8)


# -- devices ---------------------------------------------------------------------------------------


def test_auto_trains_on_the_cpu_here_and_cuda_without_a_gpu_is_one_line() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    with pytest.raises(
        ConfigError, match=r"device = 'cuda' but torch .* finds no CUDA device"
    ) as e:
        resolve_device("cuda")
    assert "\n" not in str(e.value) and "'auto' or 'cpu'" in str(e.value)
    chain = {"chain": {"offline": True}}
    assert parse_config(chain).trainer.device == "auto"
    assert parse_config({**chain, "trainer": {"device": "cuda"}}).trainer.device == "cuda"
    with pytest.raises(ConfigError, match=r"trainer\.device"):
        parse_config({**chain, "trainer": {"device": "gpu"}})


def test_training_asked_for_cuda_without_a_gpu_fails_before_any_step(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    task = load_task("byte-gpt", data=TINY)
    data = task.load_data(corpus(tmp_path, {"a.txt": "y" * 400}))
    state = seeded_state(task, seed=0)
    with pytest.raises(ConfigError, match="finds no CUDA device"):
        train_local(task, state, data, epochs=1, batch_size=4, lr=0.1, seed=0, device="cuda")
    auto, _, _ = train_local(task, state, data, epochs=1, batch_size=4, lr=0.1, seed=0,
                             device="auto")  # fmt: skip
    cpu, _, _ = train_local(task, state, data, epochs=1, batch_size=4, lr=0.1, seed=0)
    assert all(torch.equal(auto[k], cpu[k]) for k in cpu)


# -- allmende model sample -------------------------------------------------------------------------


def test_model_sample_continues_a_prompt_from_a_model_file(tmp_path: Path, capsys) -> None:
    from test_node_data_cli import cli, spec_file

    spec = spec_file(tmp_path, "byte-gpt", TINY)
    task = load_task("byte-gpt", data=TINY)
    path = tmp_path / "model.safetensors"
    path.write_bytes(encode_state(seeded_state(task, seed=1)))
    args = ("model", "sample", "--model", str(path), "--spec", str(spec), "--prompt", "import ",
            "--bytes", "40", "--seed", "3")  # fmt: skip
    assert cli(*args) == 0
    first = capsys.readouterr().out
    assert first.startswith("import ") and len(first.encode()) > len("import ")
    assert cli(*args) == 0 and capsys.readouterr().out == first
    assert cli(*args[:-1], "4") == 0 and capsys.readouterr().out != first


def test_model_sample_refuses_other_tasks_and_bad_arguments(tmp_path: Path, capsys) -> None:
    from test_node_data_cli import cli, spec_file

    digits = spec_file(tmp_path, "digits-mlp", {})
    model = tmp_path / "m.safetensors"
    model.write_bytes(encode_state(seeded_state(load_task("digits-mlp"), seed=0)))
    cases = [
        (("--model", str(model), "--spec", str(digits)), "'digits-mlp', not 'byte-gpt'"),
        (("--model", str(model)), "--model needs --spec"),
        ((), "Give either --job ID or --model FILE"),
        (("--job", "1", "--model", str(model)), "not both or none"),
        (("--model", str(model), "--spec", str(digits), "--bytes", "0"), "--bytes must be between"),
        (("--model", str(model), "--spec", str(spec_file(tmp_path, "byte-gpt", TINY))),
         "does not fit the byte-gpt model its spec describes"),
    ]  # fmt: skip
    for args, message in cases:
        assert cli("model", "sample", *args) in (1, 2)  # a ConfigError's or a TaskError's
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
