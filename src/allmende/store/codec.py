"""Canonical tensor codec: a model or update as a safetensors blob with exactly one encoding.

The same tensors give the same bytes, and so the same hash, on every machine. The bytes are a
valid safetensors file (``safetensors.torch.load`` reads them), written by hand so that nothing
varies:

- names sorted (by UTF-8 bytes), tensors laid out back to back in that order, no gaps;
- the header is compact JSON with sorted keys and no ``__metadata__``, padded with spaces to a
  multiple of 8 bytes (as safetensors pads);
- data contiguous, little-endian, on the CPU.

:func:`decode_state` accepts only bytes that :func:`encode_state` would have written: it re-encodes
the header it parsed and compares byte for byte, so a second encoding of the same tensors (and with
it a second hash) is refused. Nothing here ever unpickles.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import sys
from collections.abc import Mapping

import torch

from allmende.errors import CodecError

# dtype name in the safetensors header <-> torch dtype.
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
# Decoding accepts these unless the caller narrows it (e.g. to {"F32"} for model updates).
DEFAULT_ALLOWED_DTYPES = frozenset(DTYPES)
# A header larger than this is refused before it is parsed (safetensors' own limit is 100 MB).
MAX_HEADER_BYTES = 100_000_000
_ALIGN = 8


def _require_little_endian() -> None:
    if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
        raise CodecError("The tensor codec needs a little-endian machine; this one is big-endian.")


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    return flat.view(torch.uint8).numpy().tobytes()


def _header_bytes(entries: dict[str, dict[str, object]]) -> bytes:
    raw = json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return raw + b" " * (-len(raw) % _ALIGN)


def encode_state(state: Mapping[str, torch.Tensor]) -> bytes:
    """The canonical safetensors bytes of ``state`` (name -> tensor).

    Raises :class:`CodecError` for a name that is not a non-empty string or ``__metadata__``, a
    value that is not a tensor, or an unsupported dtype.
    """
    _require_little_endian()
    entries: dict[str, dict[str, object]] = {}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(state, key=lambda n: n.encode() if isinstance(n, str) else b""):
        tensor = state[name]
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise CodecError(f"Tensor name {name!r} is not allowed; use a non-empty string.")
        if not isinstance(tensor, torch.Tensor):
            raise CodecError(f"State entry {name!r} is a {type(tensor).__name__}, not a tensor.")
        if tensor.dtype not in _NAMES:
            raise CodecError(
                f"Tensor {name!r} has dtype {tensor.dtype}, which the codec does not support; "
                f"convert it to one of {sorted(DTYPES)}."
            )
        data = _tensor_bytes(tensor)
        entries[name] = {
            "dtype": _NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    header = _header_bytes(entries)
    return struct.pack("<Q", len(header)) + header + b"".join(chunks)


def state_hash(state: Mapping[str, torch.Tensor]) -> str:
    """The SHA-256 (hex) of :func:`encode_state` ``(state)``: the blob name of these tensors."""
    return hashlib.sha256(encode_state(state)).hexdigest()


def _parse_header(data: bytes) -> tuple[dict[str, dict[str, object]], int]:
    if len(data) < 8:
        raise CodecError("The tensor blob is shorter than the 8-byte safetensors length prefix.")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise CodecError(
            f"The tensor blob declares a {header_len}-byte header, which does not fit in its "
            f"{len(data)} bytes; the blob is truncated or not safetensors."
        )
    raw = data[8 : 8 + header_len]
    try:
        entries = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"The tensor blob's header is not valid UTF-8 JSON: {exc}.") from None
    if not isinstance(entries, dict):
        raise CodecError("The tensor blob's header is not a JSON object.")
    if "__metadata__" in entries:
        raise CodecError("The tensor blob carries __metadata__, which canonical blobs never do.")
    for name, entry in entries.items():
        _check_entry(name, entry)
    if _header_bytes(entries) != raw:
        raise CodecError(
            "The tensor blob's header is not in canonical form (sorted keys, compact JSON, "
            "space padding); re-encode it with allmende.store.codec.encode_state."
        )
    return entries, 8 + header_len


def _check_entry(name: str, entry: object) -> None:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise CodecError(f"Header entry {name!r} must hold exactly dtype, shape, data_offsets.")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPES:
        raise CodecError(f"Tensor {name!r} has unknown dtype {dtype!r}.")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise CodecError(f"Tensor {name!r} has a malformed shape {shape!r}.")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise CodecError(f"Tensor {name!r} has malformed data_offsets {offsets!r}.")


def decode_state(
    data: bytes,
    *,
    require_finite: bool = True,
    allowed_dtypes: frozenset[str] = DEFAULT_ALLOWED_DTYPES,
) -> dict[str, torch.Tensor]:
    """Tensors from canonical bytes; refuse anything :func:`encode_state` would not write.

    ``require_finite`` refuses NaN and ±Inf in floating-point tensors; ``allowed_dtypes`` (header
    names such as ``"F32"``) refuses every other dtype. Raises :class:`CodecError` saying what is
    wrong; the returned tensors are writable CPU tensors.
    """
    _require_little_endian()
    entries, start = _parse_header(data)
    names = sorted(entries, key=lambda n: n.encode())
    body = bytearray(data[start:])
    expected = 0
    state: dict[str, torch.Tensor] = {}
    for name in names:
        entry = entries[name]
        dtype_name = str(entry["dtype"])
        if dtype_name not in allowed_dtypes:
            raise CodecError(
                f"Tensor {name!r} has dtype {dtype_name}, but only {sorted(allowed_dtypes)} "
                "are accepted here."
            )
        dtype = DTYPES[dtype_name]
        shape = [int(d) for d in entry["shape"]]  # type: ignore[attr-defined]
        begin, end = (int(o) for o in entry["data_offsets"])  # type: ignore[attr-defined]
        item = torch.empty((), dtype=dtype).element_size()
        size = math.prod(shape) * item
        if begin != expected or end - begin != size:
            raise CodecError(
                f"Tensor {name!r} occupies bytes [{begin}, {end}) but canonical layout puts its "
                f"{size} bytes at offset {expected}."
            )
        if end > len(body):
            raise CodecError(
                f"Tensor {name!r} ends at byte {end} but the blob holds only {len(body)} data "
                "bytes; the blob is truncated."
            )
        expected = end
        if size == 0:
            state[name] = torch.empty(shape, dtype=dtype)
        else:
            state[name] = torch.frombuffer(
                body, dtype=dtype, count=size // item, offset=begin
            ).reshape(shape)
        if dtype_name == "BOOL" and size and max(body[begin:end]) > 1:
            raise CodecError(f"Tensor {name!r} is boolean but holds bytes other than 0 and 1.")
        if require_finite and dtype_name in FLOAT_DTYPES and not torch.isfinite(state[name]).all():
            raise CodecError(f"Tensor {name!r} holds NaN or infinite values, which are refused.")
    if expected != len(body):
        raise CodecError(
            f"The tensor blob has {len(body) - expected} bytes after its last tensor; "
            "canonical blobs have none."
        )
    return state
