"""Node config (unknown and mistyped keys named), the keystore, and the home lock."""

from __future__ import annotations

import json
import multiprocessing
import tomllib
from pathlib import Path

import pytest
from eth_account import Account

from allmende.errors import ConfigError, NodeError
from allmende.node.config import (
    CONFIG_FILE,
    NodeConfig,
    load_config,
    parse_config,
    write_config,
)
from allmende.node.home import home_lock
from allmende.node.keystore import create_key, is_plaintext, load_key

OFFLINE = {"chain": {"offline": True}}


def test_defaults_and_derived_values() -> None:
    config = parse_config(OFFLINE)
    assert config.node.roles == ["trainer", "aggregator"]
    assert config.node.role_bits == 3
    assert config.node.endpoint == "http://127.0.0.1:8470"
    node = {"public_url": "http://x:1", "roles": ["aggregator"]}
    custom = parse_config({**OFFLINE, "node": node})
    assert custom.node.endpoint == "http://x:1"
    assert custom.node.role_bits == 2


def test_role_bits_are_the_registrys() -> None:
    from allmende.chain import ROLE_AGGREGATOR, ROLE_PROVIDER, ROLE_TRAINER, ROLE_VERIFIER
    from allmende.node.config import ROLE_BITS

    assert ROLE_BITS == {
        "trainer": ROLE_TRAINER,
        "aggregator": ROLE_AGGREGATOR,
        "verifier": ROLE_VERIFIER,
        "provider": ROLE_PROVIDER,
    }


@pytest.mark.parametrize("role", ["verifier", "provider"])
def test_roles_without_a_service_are_refused_with_what_to_do(role: str) -> None:
    with pytest.raises(ConfigError, match=f"node.roles: .*'{role}' has no service") as caught:
        parse_config({**OFFLINE, "node": {"roles": ["trainer", role]}})
    assert "remove it from node.roles" in str(caught.value)


@pytest.mark.parametrize(
    "raw, named",
    [
        ({**OFFLINE, "node": {"prot": 1}}, "node.prot"),
        ({**OFFLINE, "node": {"port": "eighty"}}, "node.port"),
        ({**OFFLINE, "node": {"port": 70000}}, "node.port"),
        ({**OFFLINE, "node": {"roles": ["trainer", "baker"]}}, "node.roles.1"),
        ({**OFFLINE, "store": {"max_blob_bytes": 0}}, "store.max_blob_bytes"),
        ({**OFFLINE, "stake": {"amount_wei": -1}}, "stake.amount_wei"),
        ({**OFFLINE, "trainer_typo": {}}, "trainer_typo"),
        ({"chain": {"offline": True, "trusted_signers": ["0x12"]}}, "chain.trusted_signers"),
        ({"chain": {}}, "chain.deployment"),
        ({}, "chain"),
    ],
)
def test_unknown_and_mistyped_keys_are_named(raw: dict, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert named in str(caught.value)


def test_written_config_reads_back_identically(tmp_path: Path) -> None:
    config = parse_config(
        {
            "node": {"port": 9001, "roles": ["trainer"]},
            "chain": {"deployment": "../devnet/deployment.json"},
            "stake": {"amount_wei": 10**18},
        }
    )
    path = write_config(tmp_path, config)
    assert path == tmp_path / CONFIG_FILE
    assert tomllib.loads(path.read_text())["stake"]["amount_wei"] == 10**18
    assert load_config(tmp_path) == config


def test_strings_with_newlines_quotes_and_control_characters_read_back_exactly(
    tmp_path: Path,
) -> None:
    awkward = 'a\nb "quoted" back\\slash\ttab\r\x01\x7f\u00e9 [x] = 1'
    config = parse_config(
        {
            "node": {"data_dir": awkward, "password_env": awkward},
            "chain": {"deployment": f"{awkward}/deployment.json"},
            "trainer": {"allowed_tasks": [awkward, "plain"]},
        }
    )
    write_config(tmp_path, config)
    assert load_config(tmp_path) == config
    assert load_config(tmp_path).node.password_env == awkward


def test_load_config_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="node init"):
        load_config(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("[node\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path)


def test_sections_can_be_added_by_subclassing() -> None:
    from pydantic import BaseModel, ConfigDict

    class TrainerSection(BaseModel):
        model_config = ConfigDict(extra="forbid")
        batch_size: int = 32

    class Extended(NodeConfig):
        trainer: TrainerSection = TrainerSection()

    extended = Extended.model_validate({**OFFLINE, "trainer": {"batch_size": 8}})
    assert extended.trainer.batch_size == 8


def test_encrypted_key_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "key.json"
    address = create_key(path, password="correct horse", chain_id=1)
    assert not is_plaintext(path)
    assert "private" not in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("PW", "correct horse")
    assert load_key(path, chain_id=1, password_env="PW").address == address
    monkeypatch.setenv("PW", "wrong horse!")
    with pytest.raises(ConfigError, match="does not decrypt"):
        load_key(path, chain_id=1, password_env="PW")
    monkeypatch.delenv("PW")
    with pytest.raises(ConfigError, match=r"set \$PW"):
        load_key(path, chain_id=1, password_env="PW")
    prompted = load_key(path, chain_id=1, password_env="PW", prompt=lambda: "correct horse")
    assert prompted.address == address


def test_key_creation_refusals(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 8"):
        create_key(tmp_path / "k1.json", password="short", chain_id=1)
    with pytest.raises(ConfigError, match="only on a devnet"):
        create_key(tmp_path / "k2.json", password=None, plaintext=True, chain_id=1)
    create_key(tmp_path / "k3.json", password="long enough", chain_id=1)
    with pytest.raises(NodeError, match="refusing to overwrite"):
        create_key(tmp_path / "k3.json", password="long enough", chain_id=1)


def test_plaintext_key_only_on_devnet_chains(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    imported = Account.create()
    address = create_key(
        path, password=None, plaintext=True, chain_id=31337, private_key=imported.key.hex()
    )
    assert address == imported.address and is_plaintext(path)
    assert load_key(path, chain_id=31337, password_env="UNSET_X").address == imported.address
    with pytest.raises(ConfigError, match="only on a devnet"):
        load_key(path, chain_id=1, password_env="UNSET_X")


def test_a_loaded_key_signs_as_the_imported_one(tmp_path: Path) -> None:
    imported = Account.create()
    path = tmp_path / "key.json"
    create_key(path, password=None, plaintext=True, chain_id=31337, private_key=imported.key.hex())
    loaded = load_key(path, chain_id=31337, password_env="UNSET_X")
    assert loaded.key == bytes(imported.key)
    assert imported.key.hex() not in repr(loaded)


def test_a_plaintext_key_file_without_a_valid_key_is_refused_clearly(tmp_path: Path) -> None:
    for i, bad in enumerate(("0x1234", "0x" + "00" * 32, None, "not hex")):
        path = tmp_path / f"key{i}.json"
        path.write_text(json.dumps({"allmende-insecure-plaintext-key": True, "private_key": bad}))
        with pytest.raises(ConfigError, match="holds no valid key"):
            load_key(path, chain_id=31337, password_env="UNSET_X")


def _try_lock(home: str, queue: multiprocessing.Queue) -> None:
    try:
        with home_lock(Path(home)):
            queue.put("locked")
    except NodeError as exc:
        queue.put(str(exc))


def test_home_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")  # a separate process: flock is per open file
    queue = ctx.Queue()
    with home_lock(tmp_path):
        other = ctx.Process(target=_try_lock, args=(str(tmp_path), queue))
        other.start()
        other.join(60)
        message = queue.get(timeout=10)
        assert "already using the node home" in message
    other = ctx.Process(target=_try_lock, args=(str(tmp_path), queue))
    other.start()
    other.join(60)
    assert queue.get(timeout=10) == "locked"


def _cli(*args: str) -> int:
    from allmende.cli.main import run

    try:
        run(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_node_init_put_and_gc_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import os
    import time

    from allmende.store.blobs import BlobStore
    from allmende.store.state import StateDB

    home = tmp_path / "home"
    monkeypatch.setenv("ALLMENDE_KEY_PASSWORD", "a long password")
    assert _cli("node", "init", str(home), "--offline", "--port", "9999") == 0
    assert {"node.toml", "key.json", "state.sqlite", "blobs"} <= {p.name for p in home.iterdir()}
    assert load_config(home).node.port == 9999
    assert not is_plaintext(home / "key.json")
    assert _cli("node", "init", str(home), "--offline") != 0  # never over an existing home
    assert "already holds a node" in capsys.readouterr().err

    kept_file, loose_file = tmp_path / "kept.bin", tmp_path / "loose.bin"
    kept_file.write_bytes(b"pinned model")
    loose_file.write_bytes(b"nobody needs me")
    assert _cli("node", "put", str(home), str(kept_file), "--pin", "job:1") == 0
    kept = capsys.readouterr().out.strip()
    store = BlobStore(home / "blobs")
    loose = store.put_file(loose_file)
    past = time.time() - 10
    for digest in (kept, loose):
        os.utime(store.path(digest), (past, past))
    assert _cli("node", "gc", str(home), "--grace-seconds", "5") == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"removed": [loose], "kept": [kept]}
    assert store.has(kept) and not store.has(loose)
    state = StateDB.open(home / "state.sqlite")
    assert state.refs(kept) == ["job:1"]
    state.close()


def test_node_init_refuses_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        _cli(
            "node",
            "init",
            str(tmp_path / "a"),
            "--offline",
            "--roles",
            "baker",
            "--insecure-plaintext-key",
        )
        == 2
    )
    assert "node.roles.0" in capsys.readouterr().err
    assert _cli("node", "init", str(tmp_path / "b"), "--insecure-plaintext-key") == 2
    assert "--deployment" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_node_init_on_a_devnet_allows_loopback_endpoints_and_the_ranges_given(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from allmende.cli.node import app
    from allmende.net.endpoints import LOOPBACK_RANGES

    home = tmp_path / "n"
    args = ["init", str(home), "--offline", "--insecure-plaintext-key"]
    result = CliRunner().invoke(app, [*args, "--allow-endpoint-range", "10.0.0.0/8"])
    assert result.exit_code == 0, result.output
    net = load_config(home).net
    assert net.allow_endpoint_ranges == [*LOOPBACK_RANGES, "10.0.0.0/8"]
    assert net.endpoint_policy.url_problem("http://127.0.0.1:8470") is None
    assert net.endpoint_policy.url_problem("http://10.1.2.3:8470") is None
    assert net.endpoint_policy.url_problem("http://192.168.0.1:8470") is not None
