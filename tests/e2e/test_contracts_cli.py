"""``allmende contracts deploy`` against the session's Anvil: a deployment from a keystore, and
one clear line (no traceback, nothing written) for each way it can go wrong.

The deployment to Hardhat's network, and the job run on it, is ``test_other_chain.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from eth_account import Account
from nodes import allmende, free_port

from allmende.chain import Contracts, Deployment, dev_keys
from allmende.chain.deploy import deployment_is_live

KEY_ENV = "E2E_DEPLOYER_KEY"
PASSWORD_ENV = "E2E_KEYSTORE_PASSWORD"
ANVIL_CHAIN_ID = 31337


def deploy(rpc_url: str, out: Path, *args: str, env: dict[str, str] | None = None,
           chain_id: int = ANVIL_CHAIN_ID):  # fmt: skip
    return allmende(
        "contracts", "deploy", "--rpc-url", rpc_url, "--chain-id", str(chain_id),
        "--out", str(out), *args, env=env,
    )  # fmt: skip


def one_line_error(result, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_deployment_from_an_encrypted_keystore_is_live_and_named_in_the_file(
    devnet, tmp_path
) -> None:
    key = devnet.new_key()
    keystore = tmp_path / "deployer.json"
    keystore.write_text(json.dumps(Account.encrypt(key, "a long password")))
    settings = tmp_path / "contracts.toml"
    settings.write_text("aggregator_share_bps = 1_500\nmin_stake = 5\n")
    out = tmp_path / "net" / "deployment.json"
    done = deploy(devnet.rpc_url, out, "--keystore", str(keystore), "--settings", str(settings),
                  env={PASSWORD_ENV: "a long password"}, chain_id=ANVIL_CHAIN_ID)  # fmt: skip
    # the password is in another variable than the default one
    assert "set $ALLMENDE_KEY_PASSWORD" in one_line_error(done, 2) and not out.exists()

    password = {PASSWORD_ENV: "a long password"}
    done = deploy(devnet.rpc_url, out, "--keystore", str(keystore), "--settings", str(settings),
                  "--password-env", PASSWORD_ENV, env=password)  # fmt: skip
    assert done.returncode == 0, done.stderr
    deployment = Deployment.load(out)
    reader = Contracts.connect(deployment)
    assert deployment_is_live(reader.client, deployment)
    assert reader.registry.min_stake() == 5
    deployer = Account.from_key(key).address
    assert f"deploying from {deployer} to chain {ANVIL_CHAIN_ID}" in done.stdout
    assert reader.registry.admin() == deployer


def test_each_mistake_is_one_line_and_writes_nothing(devnet, tmp_path) -> None:
    out = tmp_path / "deployment.json"
    env = {KEY_ENV: dev_keys(1)[0]}
    key = ["--key-env", KEY_ENV]

    nobody = f"http://127.0.0.1:{free_port()}"
    assert "Cannot reach the chain at" in one_line_error(deploy(nobody, out, *key, env=env), 1)

    wrong = one_line_error(deploy(devnet.rpc_url, out, *key, env=env, chain_id=1), 1)
    assert f"has id {ANVIL_CHAIN_ID}, not 1; check --rpc-url and --chain-id" in wrong

    poor = {KEY_ENV: Account.create().key.to_0x_hex()}
    broke = one_line_error(deploy(devnet.rpc_url, out, *key, env=poor), 1)
    assert "holds 0 wei on chain 31337, but the deployment may cost up to" in broke
    assert "fund it and retry" in broke

    settings = tmp_path / "contracts.toml"
    settings.write_text("min_stak = 1\n")
    typo = one_line_error(deploy(devnet.rpc_url, out, *key, "--settings", str(settings), env=env),
                          2)  # fmt: skip
    assert f"{settings} has an unknown key 'min_stak'; the keys are min_stake," in typo
    settings.write_text("aggregator_share_bps = 10_001\n")
    bad = one_line_error(deploy(devnet.rpc_url, out, *key, "--settings", str(settings), env=env),
                         2)  # fmt: skip
    assert "invalid at aggregator_share_bps" in bad

    unset = one_line_error(deploy(devnet.rpc_url, out, *key), 2)
    assert f"${KEY_ENV} is not set" in unset
    assert not out.exists()

    out.write_text("{}")  # a deployment file nodes may use is never overwritten by mistake
    kept = one_line_error(deploy(devnet.rpc_url, out, *key, env=env), 2)
    assert "exists already" in kept and "--force" in kept and out.read_text() == "{}"
