"""Schemathesis against a real node process: no generated request may get a 5xx.

The node is a real ``allmende node run`` (offline: the API is the same, and the test needs no
chain) holding a few blobs. For every operation in its OpenAPI schema, schemathesis generates
cases (valid and, where the operation takes input, invalid ones), and Hypothesis adds what the
schema cannot express: real and near-real blob names, ``Range`` headers, stray query parameters
and headers, so even an operation without parameters gets ``REQUESTS_PER_OPERATION`` distinct
requests. After each operation's run the node must still answer, and its own count of internal
errors must be zero (each test checks it itself, so it holds whichever test runs alone).
"""

from __future__ import annotations

import collections
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from fault_nodes import NodeProcess, init_node
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

REQUESTS_PER_OPERATION = 500
# Every operation of the node API (net/api.py). A new endpoint must be added here to be fuzzed.
OPERATIONS = [
    "GET /v1/info",
    "GET /healthz",
    "GET /metrics",
    "HEAD /v1/blobs/{digest}",
    "GET /v1/blobs/{digest}",
    "POST /v1/messages",
]
HEX = "0123456789abcdef"
PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """An offline node process holding three blobs (one empty); killed at the end."""
    root = tmp_path_factory.mktemp("fuzz")
    running = init_node(root / "node", offline=True)
    for name, data in (("empty", b""), ("small", b"allmende"), ("big", bytes(range(256)) * 5000)):
        (root / name).write_bytes(data)
        running.put(root / name)
    running.start()
    try:
        yield running
    finally:
        running.kill()


@pytest.fixture(scope="module")
def schema(node: NodeProcess) -> Any:
    return schemathesis.openapi.from_url(f"{node.url}/openapi.json")


@pytest.fixture(scope="module")
def stored_digests(node: NodeProcess) -> list[str]:
    blobs = node.home / "blobs"
    return sorted(p.name for p in blobs.glob("??/*"))


def test_the_schema_lists_exactly_the_fuzzed_operations(schema: Any) -> None:
    labels = [result.ok().label for result in schema.get_all_operations()]
    assert sorted(labels) == sorted(OPERATIONS)


def extras(takes_digest: bool, stored: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """What schemathesis does not generate: blob names, Range, stray query and headers."""
    names = st.from_regex(r"X-[A-Za-z0-9-]{1,16}", fullmatch=True)
    parts: dict[str, st.SearchStrategy[Any]] = {
        "query": st.dictionaries(
            st.text(string.ascii_letters + "_[]", min_size=1, max_size=8),
            st.text(PRINTABLE, max_size=16),
            max_size=3,
        ),
        "headers": st.dictionaries(
            names, st.text(PRINTABLE, max_size=32).map(str.strip), max_size=3
        ),
    }
    if takes_digest:
        offsets = st.integers(-5, 2_000_000).map(str) | st.just("")
        parts["digest"] = st.one_of(
            st.none(),  # keep schemathesis's own value
            st.sampled_from(stored),
            st.text(HEX, min_size=64, max_size=64),
            st.text(HEX + "ABCDEFxyz.%/", min_size=60, max_size=70),
        )
        parts["range"] = st.one_of(
            st.none(),
            st.builds(lambda a, b: f"bytes={a}-{b}", offsets, offsets),
            st.builds(lambda a, b: f"bytes={a}-{b},{b}-{a}", offsets, offsets),
            st.text(PRINTABLE, max_size=24).map(str.strip),
        )
    return st.fixed_dictionaries(parts)


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_generated_request_gets_a_server_error(
    label: str, schema: Any, node: NodeProcess, stored_digests: list[str]
) -> None:
    operation = schema[label.split(" ", 1)[1]][label.split(" ", 1)[0]]
    has_input = bool(operation.path_parameters) or operation.body
    modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if operation.body else [])
    cases = st.one_of([operation.as_strategy(generation_mode=mode) for mode in modes])
    statuses: collections.Counter[int] = collections.Counter()
    server_errors: list[str] = []
    session = requests.Session()

    @settings(
        max_examples=REQUESTS_PER_OPERATION,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, extra=extras("{digest}" in label, stored_digests))
    def send(case: Any, extra: dict[str, Any]) -> None:
        if extra.get("digest") is not None:
            case.path_parameters = {"digest": extra["digest"]}
        headers = dict(extra["headers"])
        if extra.get("range") is not None:
            headers["Range"] = extra["range"]
        response = case.call(
            base_url=node.url, session=session, headers=headers, params=extra["query"], timeout=30
        )
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            server_errors.append(
                f"{case.method} {case.formatted_path} {headers} -> "
                f"{response.status_code} {response.text[:200]}"
            )

    send()
    session.close()
    sent = sum(statuses.values())
    print(f"{label}: {sent} requests, statuses {dict(sorted(statuses.items()))}")
    assert not server_errors, "\n".join(server_errors[:10])
    assert sent >= REQUESTS_PER_OPERATION
    assert node.alive(), node.log_tail()
    assert has_input or statuses[200] == sent  # parameterless endpoints ignore stray input
    # and what this operation's requests did inside the node: no unexpected failure, no trace
    assert internal_errors(node) == 0, node.log_tail()
    assert "Traceback" not in Path(node.log_path).read_text()


def internal_errors(node: NodeProcess) -> float:
    """The node's own count of unexpected failures (``allmende_internal_errors_total``)."""
    metrics = httpx.get(f"{node.url}/metrics", timeout=10).text
    values = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("allmende_internal_errors_total ")
    ]
    assert values, f"the node exports no internal-error count: {metrics[:500]}"
    return sum(values)
