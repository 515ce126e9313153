"""Finding Anvil, and the one-line error when it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from allmende.chain import devnet as devnet_module
from allmende.chain.devnet import Devnet, DevnetConfig, find_anvil
from allmende.errors import ConfigError, DevnetError


def hide_anvil(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ALLMENDE_ANVIL", raising=False)
    monkeypatch.setattr(devnet_module._paths, "project_root", lambda: tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


def test_missing_anvil_raises_one_line_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hide_anvil(monkeypatch, tmp_path)
    with pytest.raises(DevnetError) as info:
        find_anvil()
    message = str(info.value)
    assert "\n" not in message
    assert "make setup" in message and "@foundry-rs/anvil@1.7.1" in message


def test_devnet_up_without_anvil_fails_before_creating_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hide_anvil(monkeypatch, tmp_path)
    state = tmp_path / "state"
    with pytest.raises(DevnetError, match="make setup"):
        Devnet(DevnetConfig(state_dir=state, port=1)).up()
    assert not (state / "anvil.pid").exists()


def test_env_variable_wins_and_must_be_executable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "anvil"
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setenv("ALLMENDE_ANVIL", str(fake))
    with pytest.raises(DevnetError, match="not an executable"):
        find_anvil()
    os.chmod(fake, 0o755)
    assert find_anvil() == fake


def test_project_copy_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hide_anvil(monkeypatch, tmp_path)
    local = tmp_path / ".tools" / "anvil" / "node_modules" / ".bin" / "anvil"
    local.parent.mkdir(parents=True)
    local.write_text("")
    assert find_anvil() == local


def test_not_running_devnet_reports_so(tmp_path: Path) -> None:
    net = Devnet(DevnetConfig(state_dir=tmp_path, port=1))
    assert net.pid() is None
    assert net.status().running is False
    assert net.down() is False


def test_stale_pid_file_is_not_taken_for_a_running_devnet(tmp_path: Path) -> None:
    (tmp_path / "anvil.pid").write_text(f"{os.getpid()}\nhttp://127.0.0.1:1\n")  # pytest, not anvil
    assert Devnet(DevnetConfig(state_dir=tmp_path)).pid() is None


def test_config_rejects_unknown_keys_and_bad_ports() -> None:
    with pytest.raises(ValueError, match="extra"):
        DevnetConfig(prot=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="port"):
        DevnetConfig(port=70000)
    assert not issubclass(DevnetError, ConfigError)


def test_cli_status_of_a_stopped_devnet_is_one_line_and_exit_code_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from allmende.cli.main import run

    with pytest.raises(SystemExit) as info:
        run(["devnet", "status", "--state", str(tmp_path)])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "allmende devnet up" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["up", "status", "down"])
def test_cli_subcommands_explain_themselves(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from allmende.cli.main import run

    try:
        run(["devnet", command, "--help"])
    except SystemExit as exc:  # click may or may not exit after printing help
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "--state" in out
    assert ("--port" in out) == (command == "up")


def test_cli_accounts_lists_the_funded_dev_keys(capsys: pytest.CaptureFixture[str]) -> None:
    from eth_account import Account

    from allmende.cli.main import run

    with pytest.raises(SystemExit) as info:
        run(["devnet", "accounts", "--count", "3"])
    assert info.value.code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for expected_index, line in enumerate(lines):
        index, address, key = line.split()
        assert int(index) == expected_index
        assert Account.from_key(key).address == address
    # Account 0 is Anvil's well-known deployer.
    assert lines[0].split()[1] == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def test_project_copy_prefers_the_native_binary_over_the_launcher(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hide_anvil(monkeypatch, tmp_path)
    monkeypatch.setattr(devnet_module.sys, "platform", "linux")
    monkeypatch.setattr(devnet_module.platform, "machine", lambda: "x86_64")
    modules = tmp_path / ".tools" / "anvil" / "node_modules"
    launcher = modules / ".bin" / "anvil"
    launcher.parent.mkdir(parents=True)
    launcher.write_text("")
    native = modules / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
    native.parent.mkdir(parents=True)
    native.write_text("#!/bin/sh\n")
    assert find_anvil() == launcher  # not executable: not taken
    os.chmod(native, 0o755)
    assert find_anvil() == native
