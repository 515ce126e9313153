"""Canonical tensor codec: a model or update as a safetensors blob with exactly one encoding.

The same tensors give the same bytes, and so the same hash, on every machine. The bytes are a
valid safetensors file (``safetensors.torch.load`` reads them), written by hand so that nothing
varies:

- names sorted (by UTF-8 bytes), tensors laid out back to back in that order, no gaps;
- the header is compact JSON with sorted keys, padded with spaces to a multiple of 8 bytes (as
  safetensors pads); ``__metadata__`` (string to string, as safetensors has it) is there only
  when the caller gives metadata, e.g. the job, round and author of an update;
- data contiguous, little-endian, on the CPU.

The tensor data after the header is the blob's *payload*: :func:`decode_blob` hashes it once while
decoding (:attr:`TensorBlob.payload`), so that the same tensors under other metadata are seen
as the same tensors (:func:`payload_digest` gives it for tensors in memory).

:func:`decode_state` accepts only bytes that :func:`encode_state` would have written: it re-encodes
the header it parsed and compares byte for byte, so a second encoding of the same tensors (and with
it a second hash) is refused. Nothing here ever unpickles.

The bytes come from untrusted peers, so decoding checks before it trusts: the header is bounded in
size (:data:`MAX_HEADER_BYTES`, or the caller's exact expectation from :func:`header_size`) and in
nesting depth before it is parsed, and every way the bytes can be wrong ends in
:class:`CodecError`, never in another exception. :func:`encoded_size` gives the exact length of a
state's blob without encoding it, so a fetch can refuse a single byte more.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import torch

from allmende._json import UntrustedJSONError, loads_untrusted
from allmende.errors import CodecError

if TYPE_CHECKING:
    from allmende.store.blobs import BlobStore

# What decoding reads: bytes, or a buffer such as a memory map of the blob's file.
Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap

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
# A header larger than this is refused before it is parsed, when the caller expects no exact size
# (see header_size). An entry takes about 100 bytes plus its name, so 1 MiB holds thousands of
# tensors; safetensors' own limit (100 MB) would let a peer make every reader parse 100 MB of JSON.
MAX_HEADER_BYTES = 1024 * 1024
# {names: {entry: [shape or data_offsets]}}: a canonical header never nests deeper.
MAX_HEADER_DEPTH = 3
METADATA = "__metadata__"
# Metadata is a handful of short labels (an update's job, round and author), never a payload.
MAX_METADATA_ENTRIES = 16
MAX_METADATA_KEY_BYTES = 64
MAX_METADATA_VALUE_BYTES = 256
# No dimension is larger than this (torch sizes are signed 64-bit).
_MAX_DIM = 2**63 - 1
_ALIGN = 8
# all_finite looks at this many values at a time.
FINITE_CHUNK = 1 << 20


def _require_little_endian() -> None:
    if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
        raise CodecError("The tensor codec needs a little-endian machine; this one is big-endian.")


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether a floating-point tensor holds no NaN or infinity, looked at
    :data:`FINITE_CHUNK` values at a time (a temporary mask of a whole 200 MB tensor would be
    another 50 MB, kept by the allocator afterwards)."""
    flat = tensor.reshape(-1)
    return all(bool(torch.isfinite(piece).all()) for piece in flat.split(FINITE_CHUNK))


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's data as little-endian bytes: a view of its memory (no copy) when it is a
    contiguous CPU tensor, else of a contiguous CPU copy."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return flat.view(torch.uint8).numpy().data


@dataclass(frozen=True)
class TensorBlob:
    """A decoded blob: its tensors, its ``__metadata__`` (empty when it has none) and the
    SHA-256 (hex) of its tensor data, which is the same for the same tensors whatever the
    metadata says."""

    state: dict[str, torch.Tensor]
    metadata: dict[str, str]
    payload: str


def _header_bytes(
    entries: Mapping[str, Mapping[str, object]], metadata: Mapping[str, str] | None = None
) -> bytes:
    document: dict[str, object] = dict(entries)
    if metadata:
        document[METADATA] = dict(metadata)
    raw = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return raw + b" " * (-len(raw) % _ALIGN)


def _check_metadata(metadata: object) -> dict[str, str]:
    """``metadata`` as a dict when it is what a canonical blob may carry; else CodecError."""
    if not isinstance(metadata, Mapping) or not metadata:
        raise CodecError(
            "Blob metadata must be a non-empty mapping of strings to strings (or none at all)."
        )
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise CodecError(
            f"Blob metadata has {len(metadata)} entries, more than the {MAX_METADATA_ENTRIES} "
            "allowed."
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise CodecError(f"Blob metadata entry {key!r}: {value!r} is not a string pair.")
        try:
            key_bytes, value_bytes = len(key.encode()), len(value.encode())
        except UnicodeEncodeError:
            raise CodecError("Blob metadata holds invalid Unicode.") from None
        if key_bytes > MAX_METADATA_KEY_BYTES or value_bytes > MAX_METADATA_VALUE_BYTES:
            raise CodecError(
                f"Blob metadata entry {key[:32]!r} is longer than allowed (keys "
                f"{MAX_METADATA_KEY_BYTES} bytes, values {MAX_METADATA_VALUE_BYTES})."
            )
    return dict(metadata)


def _layout(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, dict[str, object]], int]:
    """The canonical header entries of ``state`` (names in UTF-8 byte order, data back to back)
    and the number of data bytes; :class:`CodecError` for what :func:`encode_state` refuses."""
    entries: dict[str, dict[str, object]] = {}
    offset = 0
    for name in sorted(state, key=lambda n: n.encode() if isinstance(n, str) else b""):
        tensor = state[name]
        if not isinstance(name, str) or not name or name == METADATA:
            raise CodecError(f"Tensor name {name!r} is not allowed; use a non-empty string.")
        if not isinstance(tensor, torch.Tensor):
            raise CodecError(f"State entry {name!r} is a {type(tensor).__name__}, not a tensor.")
        if tensor.dtype not in _NAMES:
            raise CodecError(
                f"Tensor {name!r} has dtype {tensor.dtype}, which the codec does not support; "
                f"convert it to one of {sorted(DTYPES)}."
            )
        size = tensor.numel() * tensor.element_size()
        entries[name] = {
            "dtype": _NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    return entries, offset


def _metadata_or_none(metadata: Mapping[str, str] | None) -> dict[str, str] | None:
    return _check_metadata(metadata) if metadata else None


def encode_state(
    state: Mapping[str, torch.Tensor], *, metadata: Mapping[str, str] | None = None
) -> bytes:
    """The canonical safetensors bytes of ``state`` (name -> tensor), with ``metadata`` (string
    to string) as the header's ``__metadata__``; none or empty metadata writes none.

    Raises :class:`CodecError` for a name that is not a non-empty string or ``__metadata__``, a
    value that is not a tensor, an unsupported dtype, or metadata over the bounds
    (:data:`MAX_METADATA_ENTRIES` and the key and value lengths).
    """
    return b"".join(encoded_pieces(state, metadata=metadata))  # the tensors copied once


def encoded_pieces(
    state: Mapping[str, torch.Tensor], *, metadata: Mapping[str, str] | None = None
) -> list[bytes | memoryview]:
    """:func:`encode_state` as pieces to write one after another: the length prefix and header,
    then a view of each tensor's memory. Writing them to a file (:func:`write_state`) stores
    a model without a second copy of it in memory."""
    _require_little_endian()
    entries, _ = _layout(state)
    header = _header_bytes(entries, _metadata_or_none(metadata))
    return [struct.pack("<Q", len(header)) + header, *(_tensor_bytes(state[n]) for n in entries)]


def header_size(
    state: Mapping[str, torch.Tensor], *, metadata: Mapping[str, str] | None = None
) -> int:
    """The length of the JSON header (padding included) of :func:`encode_state`."""
    return len(_header_bytes(_layout(state)[0], _metadata_or_none(metadata)))


def encoded_size(
    state: Mapping[str, torch.Tensor], *, metadata: Mapping[str, str] | None = None
) -> int:
    """``len(encode_state(state, metadata=metadata))``, computed without copying tensor data.

    A blob of another model with the same names, dtypes and shapes (and metadata of the same
    length) has exactly this length, so a fetch of an update can be limited to it.
    """
    entries, data_bytes = _layout(state)
    return 8 + len(_header_bytes(entries, _metadata_or_none(metadata))) + data_bytes


def state_hash(state: Mapping[str, torch.Tensor]) -> str:
    """The SHA-256 (hex) of :func:`encode_state` ``(state)``: the blob name of these tensors."""
    return hashlib.sha256(encode_state(state)).hexdigest()


def payload_digest(state: Mapping[str, torch.Tensor]) -> str:
    """The SHA-256 (hex) of the tensor data :func:`encode_state` ``(state)`` writes after its
    header: :attr:`TensorBlob.payload` of any blob of these tensors, whatever its metadata."""
    _require_little_endian()
    entries, _ = _layout(state)
    digest = hashlib.sha256()
    for name in entries:
        digest.update(_tensor_bytes(state[name]))
    return digest.hexdigest()


def write_state(
    store: BlobStore,
    state: Mapping[str, torch.Tensor],
    *,
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Store :func:`encode_state` ``(state, metadata=metadata)`` in ``store`` piece by piece
    (hashed as written), without building the blob in memory; returns its digest."""
    with store.writer() as writer:
        for piece in encoded_pieces(state, metadata=metadata):
            writer.write(piece)
        return writer.commit()


def _parse_header(
    data: Buffer, max_header_bytes: int
) -> tuple[dict[str, dict[str, object]], dict[str, str], int]:
    if len(data) < 8:
        raise CodecError("The tensor blob is shorter than the 8-byte safetensors length prefix.")
    (header_len,) = struct.unpack("<Q", bytes(data[:8]))
    if header_len > max_header_bytes:
        raise CodecError(
            f"The tensor blob declares a {header_len}-byte header, more than the "
            f"{max_header_bytes} bytes a header of this model may have; it is not a model of "
            "this task."
        )
    if 8 + header_len > len(data):
        raise CodecError(
            f"The tensor blob declares a {header_len}-byte header, which does not fit in its "
            f"{len(data)} bytes; the blob is truncated or not safetensors."
        )
    raw = bytes(data[8 : 8 + header_len])
    try:
        entries = loads_untrusted(raw, max_depth=MAX_HEADER_DEPTH)
    except UntrustedJSONError as exc:
        raise CodecError(f"The tensor blob's header is refused: {exc}.") from None
    if not isinstance(entries, dict):
        raise CodecError("The tensor blob's header is not a JSON object.")
    metadata = _check_metadata(entries.pop(METADATA)) if METADATA in entries else {}
    for name, entry in entries.items():
        _check_entry(name, entry)
    try:
        canonical = _header_bytes(entries, metadata)
    except UnicodeEncodeError:  # a lone surrogate (\ud800) has no UTF-8 form
        raise CodecError("The tensor blob names a tensor in invalid Unicode.") from None
    if canonical != raw:
        raise CodecError(
            "The tensor blob's header is not in canonical form (sorted keys, compact JSON, "
            "space padding); re-encode it with allmende.store.codec.encode_state."
        )
    return entries, metadata, 8 + header_len


def _check_entry(name: str, entry: object) -> None:
    if not name:
        raise CodecError("The tensor blob names a tensor with the empty string.")
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise CodecError(f"Header entry {name!r} must hold exactly dtype, shape, data_offsets.")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CodecError(f"Tensor {name!r} has unknown dtype {dtype!r}.")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= _MAX_DIM for d in shape
    ):
        raise CodecError(f"Tensor {name!r} has a malformed shape {shape!r}.")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise CodecError(f"Tensor {name!r} has malformed data_offsets {offsets!r}.")


def decode_state(
    data: Buffer,
    *,
    require_finite: bool = True,
    allowed_dtypes: frozenset[str] = DEFAULT_ALLOWED_DTYPES,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> dict[str, torch.Tensor]:
    """The tensors of :func:`decode_blob` ``(data, ...)`` (its metadata is not looked at)."""
    return decode_blob(
        data,
        require_finite=require_finite,
        allowed_dtypes=allowed_dtypes,
        max_header_bytes=max_header_bytes,
    ).state


def decode_blob(
    data: Buffer,
    *,
    require_finite: bool = True,
    allowed_dtypes: frozenset[str] = DEFAULT_ALLOWED_DTYPES,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> TensorBlob:
    """Tensors, metadata and payload hash from canonical bytes; refuse anything
    :func:`encode_state` would not write.

    ``require_finite`` refuses NaN and ±Inf in floating-point tensors; ``allowed_dtypes`` (header
    names such as ``"F32"``) refuses every other dtype; a header longer than ``max_header_bytes``
    is refused unparsed (pass :func:`header_size` of the expected model to allow no more than its
    own). Raises :class:`CodecError` saying what is wrong, whatever the bytes are; the returned
    tensors are writable CPU tensors.

    ``data`` may be any buffer: ``bytes`` are copied once (the tensors must be writable), a
    writable buffer such as a copy-on-write memory map of the blob's file
    (:meth:`~allmende.store.blobs.BlobStore.map_verified`) is used in place, so the tensors
    are views of the file and decoding a 200 MB update allocates nothing of that size.
    """
    _require_little_endian()
    entries, metadata, start = _parse_header(data, max_header_bytes)
    names = sorted(entries, key=lambda n: n.encode())
    whole = memoryview(data).cast("B")
    body: Buffer = bytearray(whole[start:]) if whole.readonly else whole[start:]
    body_len = len(whole) - start
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
        if end > body_len:
            raise CodecError(
                f"Tensor {name!r} ends at byte {end} but the blob holds only {body_len} data "
                "bytes; the blob is truncated."
            )
        expected = end
        if size == 0:
            try:
                state[name] = torch.empty(shape, dtype=dtype)
            except RuntimeError:  # e.g. [0, 2**62, 2**62]: its strides overflow
                raise CodecError(f"Tensor {name!r} has a shape torch cannot hold.") from None
        else:
            state[name] = torch.frombuffer(
                body, dtype=dtype, count=size // item, offset=begin
            ).reshape(shape)
        if dtype_name == "BOOL" and size and max(bytes(body[begin:end])) > 1:
            raise CodecError(f"Tensor {name!r} is boolean but holds bytes other than 0 and 1.")
        if require_finite and dtype_name in FLOAT_DTYPES and not all_finite(state[name]):
            raise CodecError(f"Tensor {name!r} holds NaN or infinite values, which are refused.")
    if expected != body_len:
        raise CodecError(
            f"The tensor blob has {body_len - expected} bytes after its last tensor; "
            "canonical blobs have none."
        )
    return TensorBlob(state=state, metadata=metadata, payload=hashlib.sha256(body).hexdigest())
