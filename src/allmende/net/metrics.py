"""Prometheus metrics of one node, in their own registry (so several nodes fit in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest


class NodeMetrics:
    """Counters the API, the peer client and the roles update; served at ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.blob_bytes_served = Counter(
            "allmende_blob_bytes_served", "Blob bytes sent to peers.", registry=self.registry
        )
        self.blob_requests = Counter(
            "allmende_blob_requests",
            "Blob requests answered, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.corrupt_blobs = Counter(
            "allmende_corrupt_blobs",
            "Stored blobs whose bytes no longer matched their hash (quarantined).",
            registry=self.registry,
        )
        self.messages = Counter(
            "allmende_messages",
            "Signed messages received, by outcome (accepted or the reason for refusal).",
            ["outcome"],
            registry=self.registry,
        )
        self.blob_bytes_fetched = Counter(
            "allmende_blob_bytes_fetched",
            "Verified blob bytes fetched from peers.",
            registry=self.registry,
        )
        self.peer_faults = Counter(
            "allmende_peer_faults",
            "Peers that failed or misbehaved during a fetch or a message, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.peer_limit_refusals = Counter(
            "allmende_peer_limit_refusals",
            "Requests answered 503 because their peer was over its limit of connections or "
            "requests in flight ([net] max_connections_per_peer, max_requests_per_peer).",
            ["limit"],
            registry=self.registry,
        )
        self.stalled_sends_dropped = Counter(
            "allmende_stalled_sends_dropped",
            "Connections dropped because their peer read nothing for [net] send_timeout_seconds.",
            registry=self.registry,
        )
        self.internal_errors = Counter(
            "allmende_internal_errors",
            "Requests that failed with an unexpected error (a bug; see the node log).",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
