"""Hostile tensor blobs and job spec blobs: every one ends in the library's error, nothing else.

A peer chooses these bytes, so a decode that raised anything but :class:`CodecError` (for a
spec, :class:`ConfigError`) would abort the step of every node that reads them.
"""

from __future__ import annotations

import json
import struct

import pytest
import torch

from allmende._json import nesting_depth
from allmende.errors import CodecError, ConfigError
from allmende.node.jobspec import MAX_SPEC_DEPTH, JobSpec
from allmende.store.codec import (
    MAX_HEADER_BYTES,
    MAX_HEADER_DEPTH,
    decode_state,
    encode_state,
    encoded_size,
    header_size,
)

DEEP = 100_000  # far past Python's recursion limit


def _state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return {
        "fc1.weight": torch.randn(8, 4, generator=gen),
        "fc1.bias": torch.randn(8, generator=gen),
        "out[0]{x}": torch.randn(2, 8, generator=gen),  # brackets inside a name
        "steps": torch.tensor(5),
        "none": torch.empty(0, 3),
    }


def _blob(header: bytes, body: bytes = b"") -> bytes:
    """A blob with exactly this header (no padding added) and data."""
    return struct.pack("<Q", len(header)) + header + body


@pytest.mark.parametrize("opener", [b"[", b"{", b'{"a":'])
def test_deeply_nested_header_is_a_codec_error_not_a_recursion_error(opener: bytes) -> None:
    with pytest.raises(CodecError, match=f"more than {MAX_HEADER_DEPTH} deep"):
        decode_state(_blob(opener * DEEP))


def test_a_header_one_level_too_deep_is_refused_and_the_canonical_depth_passes() -> None:
    data = encode_state(_state())
    (n,) = struct.unpack("<Q", data[:8])
    assert nesting_depth(data[8 : 8 + n], limit=10) == MAX_HEADER_DEPTH
    assert set(decode_state(data)) == set(_state())
    deeper = b'{"a":{"dtype":"F32","shape":[[1]],"data_offsets":[0,4]}}'
    with pytest.raises(CodecError, match="deep"):
        decode_state(_blob(deeper, b"\0" * 4))


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    assert nesting_depth(b'{"a[[[[\\"{{{{":[1]}', limit=10) == 2
    assert nesting_depth(b"[" * 50, limit=3) == 4  # the scan stops past the limit


def test_header_over_the_bound_is_refused_before_it_is_parsed() -> None:
    header = b" " * (MAX_HEADER_BYTES + 8)
    with pytest.raises(CodecError, match=f"more than the {MAX_HEADER_BYTES} bytes"):
        decode_state(_blob(header))


def test_a_callers_exact_header_bound_refuses_one_byte_more() -> None:
    state = _state()
    data = encode_state(state)
    assert set(decode_state(data, max_header_bytes=header_size(state))) == set(state)
    with pytest.raises(CodecError, match="more than the"):
        decode_state(data, max_header_bytes=header_size(state) - 8)


def test_encoded_size_and_header_size_are_those_of_the_encoding() -> None:
    state = _state()
    data = encode_state(state)
    assert encoded_size(state) == len(data)
    (n,) = struct.unpack("<Q", data[:8])
    assert header_size(state) == n
    # another model of the same names, dtypes and shapes has exactly the same size
    other = {name: torch.zeros_like(t) for name, t in state.items()}
    assert len(encode_state(other)) == encoded_size(state)


def test_truncated_blobs_are_refused_at_every_length() -> None:
    data = encode_state(_state())
    for cut in range(len(data)):
        with pytest.raises(CodecError):
            decode_state(data[:cut])


def test_wrong_lengths_are_refused() -> None:
    data = encode_state({"a": torch.ones(4)})
    (n,) = struct.unpack("<Q", data[:8])
    with pytest.raises(CodecError, match="does not fit"):
        decode_state(struct.pack("<Q", n + 100) + data[8:])
    with pytest.raises(CodecError, match="JSON"):
        decode_state(struct.pack("<Q", n - 3) + data[8:])  # header cut mid-JSON
    with pytest.raises(CodecError, match="bytes after its last tensor"):
        decode_state(data + b"\0\0\0\0")
    with pytest.raises(CodecError, match="truncated"):
        decode_state(data[:-4])


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8", "UTF-8"),
        (b'{"a":1' + b"1" * 5000 + b"}", "not valid JSON"),  # over Python's digit limit
        (b'{"\\ud800":{"data_offsets":[0,0],"dtype":"F32","shape":[0]}}', "Unicode"),
        (b'{"":{"data_offsets":[0,0],"dtype":"F32","shape":[0]}}', "empty string"),
        (b'{"a":{"data_offsets":[0,0],"dtype":["F32"],"shape":[0]}}', "unknown dtype"),
        (b'{"a":{"data_offsets":[0,0],"dtype":"F32","shape":[0,' + b"9" * 30 + b"]}}", "shape"),
        (
            b'{"a":{"data_offsets":[0,0],"dtype":"F32","shape":[0,4611686018427387904,'
            b"4611686018427387904]}}",
            "torch cannot hold",
        ),
        (b'{"a":{"data_offsets":[0,1e999],"dtype":"F32","shape":[0]}}', "data_offsets"),
        (b'{"a":{"data_offsets":[0,0],"dtype":"F32","shape":[NaN]}}', "shape"),
        (b"[]", "not a JSON object"),
    ],
)
def test_malformed_headers_are_codec_errors(header: bytes, message: str) -> None:
    padded = header + b" " * (-len(header) % 8)
    with pytest.raises(CodecError, match=message):
        decode_state(_blob(padded))


def _spec_blob() -> bytes:
    spec = {
        "task": "digits-mlp",
        "rounds": 1,
        "min_trainers": 1,
        "max_trainers": 1,
        "quorum": 1,
        "reward_per_round": 1,
        "optimizer": {"name": "sgd", "lr": 0.1},
        "aggregation": {"rule": "fedavg", "params": {}},
    }
    return json.dumps(spec).encode()


@pytest.mark.parametrize("opener", [b"[", b"{", b'{"a":'])
def test_deeply_nested_spec_is_a_config_error(opener: bytes) -> None:
    with pytest.raises(ConfigError, match=rf"job spec: .*more than {MAX_SPEC_DEPTH} deep"):
        JobSpec.from_bytes(opener * DEEP)


def test_a_valid_spec_blob_parses_and_nesting_inside_it_is_refused() -> None:
    assert JobSpec.from_bytes(_spec_blob()).task == "digits-mlp"
    nested = _spec_blob().replace(b'"params": {}', b'"params": ' + b"[" * 20 + b"]" * 20)
    with pytest.raises(ConfigError, match="deep"):
        JobSpec.from_bytes(nested)


@pytest.mark.parametrize(
    "amount",
    ["1e999999999 ether", "Infinity ether", "-Infinity", "1e5000 wei", 2**256],
)
def test_spec_amounts_no_number_can_hold_are_config_errors(amount: object) -> None:
    blob = _spec_blob().replace(
        b'"reward_per_round": 1', f'"reward_per_round": {json.dumps(amount)}'.encode()
    )
    with pytest.raises(ConfigError, match="'reward_per_round' must be"):
        JobSpec.from_bytes(blob)


def test_the_largest_amount_the_contracts_hold_is_accepted() -> None:
    largest = str(2**256 - 1)
    blob = _spec_blob().replace(b'"reward_per_round": 1', f'"reward_per_round": {largest}'.encode())
    assert JobSpec.from_bytes(blob).reward_per_round == 2**256 - 1


def test_spec_integers_over_the_digit_limit_are_config_errors() -> None:
    blob = _spec_blob().replace(b'"rounds": 1', b'"rounds": ' + b"1" * 5000)
    with pytest.raises(ConfigError, match=r"job spec: .*not valid JSON"):
        JobSpec.from_bytes(blob)
