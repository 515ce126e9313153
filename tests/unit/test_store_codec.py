"""The canonical tensor codec: one encoding per state, and refusal of everything else."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import safetensors.torch
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from allmende.errors import CodecError
from allmende.store.codec import (
    decode_blob,
    decode_state,
    encode_state,
    encoded_size,
    header_size,
    payload_digest,
    state_hash,
)


def _state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return {
        "layer.weight": torch.randn(4, 3, generator=gen),
        "layer.bias": torch.randn(4, generator=gen).double(),
        "emb": torch.randn(2, 2, generator=gen).to(torch.bfloat16),
        "steps": torch.tensor(12),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.empty(0, 5),
    }


def _split(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def header_bytes(data: bytes) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    return data[8 : 8 + n]


def _join(header: dict | bytes, body: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def test_round_trip_keeps_every_tensor_exactly() -> None:
    state = _state()
    decoded = decode_state(encode_state(state))
    assert sorted(decoded) == sorted(state)
    for name, tensor in state.items():
        assert decoded[name].dtype == tensor.dtype
        assert torch.equal(decoded[name], tensor), name


def test_bytes_are_a_valid_safetensors_file() -> None:
    state = _state()
    loaded = safetensors.torch.load(encode_state(state))
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor), name


def test_same_tensors_same_hash_regardless_of_order_and_layout() -> None:
    state = _state()
    shuffled = {name: state[name] for name in reversed(list(state))}
    shuffled["layer.weight"] = state["layer.weight"].t().contiguous().t()  # non-contiguous view
    assert not shuffled["layer.weight"].is_contiguous()
    assert encode_state(shuffled) == encode_state(state)
    assert state_hash(shuffled) == state_hash(state)


def test_different_tensors_give_different_hashes() -> None:
    state = _state()
    changed = dict(state, steps=torch.tensor(13))
    assert state_hash(changed) != state_hash(state)
    # the same values in another dtype are another state
    assert state_hash({"x": torch.ones(2)}) != state_hash({"x": torch.ones(2).double()})


def test_header_is_sorted_compact_padded_and_without_metadata() -> None:
    data = encode_state(_state())
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0
    header, _ = _split(data)
    assert "__metadata__" not in header
    assert list(header) == sorted(header)


def test_encode_refuses_bad_names_values_and_dtypes() -> None:
    with pytest.raises(CodecError, match="name"):
        encode_state({"": torch.ones(1)})
    with pytest.raises(CodecError, match="__metadata__"):
        encode_state({"__metadata__": torch.ones(1)})
    with pytest.raises(CodecError, match="not a tensor"):
        encode_state({"x": [1.0, 2.0]})  # type: ignore[dict-item]
    with pytest.raises(CodecError, match="dtype"):
        encode_state({"x": torch.ones(2, dtype=torch.complex64)})


def test_decode_refuses_non_canonical_header() -> None:
    data = encode_state({"b": torch.ones(2), "a": torch.zeros(1)})
    header, body = _split(data)
    spaced = json.dumps(header, sort_keys=True).encode()  # not compact
    spaced += b" " * (-len(spaced) % 8)
    with pytest.raises(CodecError, match="canonical"):
        decode_state(_join(spaced, body))


def test_decode_refuses_safetensors_own_output_with_metadata_as_not_canonical() -> None:
    data = safetensors.torch.save({"x": torch.ones(2)}, metadata={"format": "pt"})
    with pytest.raises(CodecError, match="canonical"):
        decode_state(data)


AUTHOR = {"allmende.job": "3", "allmende.round": "0", "allmende.trainer": "0xab"}


def test_metadata_round_trips_and_safetensors_reads_it() -> None:
    state = _state()
    data = encode_state(state, metadata=AUTHOR)
    header, _ = _split(data)
    assert header["__metadata__"] == AUTHOR and list(header) == sorted(header)
    blob = decode_blob(data)
    assert blob.metadata == AUTHOR
    assert all(torch.equal(blob.state[k], v) for k, v in state.items())
    assert safetensors.torch.load(data).keys() == state.keys()
    assert len(data) == encoded_size(state, metadata=AUTHOR)
    assert len(header_bytes(data)) == header_size(state, metadata=AUTHOR)
    assert decode_blob(encode_state(state)).metadata == {}
    assert encode_state(state, metadata={}) == encode_state(state)  # one encoding of "none"


def test_payload_hash_is_the_tensor_data_whatever_the_metadata() -> None:
    state = _state()
    plain, named = encode_state(state), encode_state(state, metadata=AUTHOR)
    assert hashlib.sha256(plain).hexdigest() != hashlib.sha256(named).hexdigest()
    assert decode_blob(plain).payload == decode_blob(named).payload == payload_digest(state)
    moved = {**state, "steps": torch.tensor(13)}
    assert payload_digest(moved) != payload_digest(state)
    negative_zero = {"x": torch.tensor([-0.0])}  # bitwise, not numerically, equal
    assert payload_digest(negative_zero) != payload_digest({"x": torch.tensor([0.0])})


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({f"k{i}": "v" for i in range(17)}, "entries"),
        ({"k": "v" * 257}, "longer than allowed"),
        ({"k" * 65: "v"}, "longer than allowed"),
        ({"k": 1}, "string pair"),
        ({"": "v"}, "string pair"),
    ],
)
def test_encode_refuses_metadata_over_the_bounds(metadata: dict, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        encode_state({"x": torch.ones(1)}, metadata=metadata)


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({}, "non-empty mapping"),  # encode_state writes no metadata at all for none
        ({"k": ["v"]}, "string pair"),
        ("text", "non-empty mapping"),
        ({f"k{i}": "v" for i in range(17)}, "entries"),
        ({"k": "v" * 257}, "longer than allowed"),
    ],
)
def test_decode_refuses_metadata_encode_state_would_not_write(metadata: object, match: str) -> None:
    header, body = _split(encode_state({"x": torch.ones(1)}))
    raw = json.dumps({**header, "__metadata__": metadata}, sort_keys=True, separators=(",", ":"))
    raw += " " * (-len(raw) % 8)
    with pytest.raises(CodecError, match=match):
        decode_blob(_join(raw.encode(), body))


def test_decode_refuses_gaps_reordering_and_trailing_bytes() -> None:
    data = encode_state({"a": torch.ones(2), "b": torch.zeros(2)})
    header, body = _split(data)
    swapped = {
        "a": dict(header["a"], data_offsets=header["b"]["data_offsets"]),
        "b": dict(header["b"], data_offsets=header["a"]["data_offsets"]),
    }
    raw = json.dumps(swapped, sort_keys=True, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with pytest.raises(CodecError, match="canonical layout"):
        decode_state(_join(raw, body))
    with pytest.raises(CodecError, match="after its last tensor"):
        decode_state(data + b"\0" * 4)


def test_decode_refuses_truncated_and_garbage_bytes() -> None:
    data = encode_state({"a": torch.ones(4)})
    with pytest.raises(CodecError, match="truncated"):
        decode_state(data[:-1])
    with pytest.raises(CodecError, match="length prefix"):
        decode_state(b"\1\2")
    with pytest.raises(CodecError, match="does not fit"):
        decode_state(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(CodecError, match="JSON"):
        decode_state(_join(b"{not json", b""))
    with pytest.raises(CodecError, match="exactly dtype"):
        decode_state(_join(b'{"a":{"dtype":"F32"}}    ', b""))


def test_decode_refuses_unknown_and_unwanted_dtypes() -> None:
    data = encode_state({"a": torch.ones(2, dtype=torch.int32)})
    with pytest.raises(CodecError, match="only"):
        decode_state(data, allowed_dtypes=frozenset({"F32"}))
    assert decode_state(data, allowed_dtypes=frozenset({"I32"}))["a"].dtype == torch.int32
    raw = data.replace(b'"I32"', b'"C64"')
    with pytest.raises(CodecError, match="unknown dtype"):
        decode_state(raw)


def test_decode_refuses_non_finite_values_only_when_asked() -> None:
    data = encode_state({"w": torch.tensor([1.0, float("nan")]), "v": torch.tensor([float("inf")])})
    with pytest.raises(CodecError, match="NaN or infinite"):
        decode_state(data)
    decoded = decode_state(data, require_finite=False)
    assert torch.isnan(decoded["w"][1])
    assert torch.isinf(decoded["v"][0])


def test_decode_refuses_boolean_bytes_other_than_zero_and_one() -> None:
    data = bytearray(encode_state({"m": torch.tensor([True, False])}))
    data[-1] = 7
    with pytest.raises(CodecError, match="boolean"):
        decode_state(bytes(data))


def test_decoded_tensors_are_writable_and_independent_of_the_input() -> None:
    data = encode_state({"a": torch.zeros(3)})
    decoded = decode_state(data)
    decoded["a"] += 1
    assert torch.equal(decode_state(data)["a"], torch.zeros(3))


_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.uint8]


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda n: n != "__metadata__"),
        st.tuples(
            st.sampled_from(_DTYPES),
            st.lists(st.integers(0, 4), max_size=3),
            st.integers(0, 2**31),
        ),
        max_size=5,
    )
)
def test_any_state_round_trips_canonically(spec: dict) -> None:
    state = {}
    for name, (dtype, shape, seed) in spec.items():
        gen = torch.Generator().manual_seed(seed)
        state[name] = (torch.rand(shape, generator=gen) * 100).to(dtype)
    data = encode_state(state)
    decoded = decode_state(data)
    assert encode_state(decoded) == data
    for name, tensor in state.items():
        assert torch.equal(decoded[name], tensor)
