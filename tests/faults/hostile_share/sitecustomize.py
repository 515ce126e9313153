"""A hostile trainer for ``test_secure_bad_share.py``: loaded by the node process it starts
(this folder first on ``PYTHONPATH``), it makes the node's shares message deal one neighbour a
share that does not decrypt (one byte of its ciphertext flipped), signed as usual."""

from __future__ import annotations

from typing import Any

from allmende.privacy import secagg

_sign = secagg.TrainerSession._sign


def _bad_sign(self: Any, kind: str, payload: dict[str, Any]) -> Any:
    if kind == secagg.SHARES:
        entries = payload["shares"]
        victim = sorted(entries, key=str.lower)[0]
        ct = bytearray.fromhex(entries[victim]["ct"])
        ct[0] ^= 0xFF
        entries[victim] = {**entries[victim], "ct": ct.hex()}
        print(f"HOSTILE: dealt {victim} a malformed share", flush=True)
    return _sign(self, kind, payload)


secagg.TrainerSession._sign = _bad_sign  # type: ignore[method-assign]
