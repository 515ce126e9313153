"""Asking nodes whether they serve and are ready, over one kept-alive HTTP client.

A one-off ``httpx.get`` builds a client for the call, and with it a TLS context loaded with the
CA certificates: tens of milliseconds of CPU even for a plain-HTTP URL on loopback. Polling nine
starting nodes that way every tenth of a second took most of a core from the nodes it waited
for. :class:`HealthProbe` makes one client (with the process's shared TLS settings) and asks
every node through it.
"""

from __future__ import annotations

from types import TracebackType

import httpx

from allmende.net.client import tls_context

PROBE_TIMEOUT_SECONDS = 2.0


class HealthProbe:
    """``GET /healthz`` of nodes by their base URL; use as a context manager (or :meth:`close`)."""

    def __init__(self, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
        self._client = httpx.Client(timeout=timeout, verify=tls_context())

    def serving(self, url: str) -> bool:
        """Whether the node at ``url`` answers ``/healthz`` with a success."""
        return self._answer(url) is not None

    def ready(self, url: str) -> bool:
        """Whether the node at ``url`` serves and its roles are ready for jobs (``"ready"``)."""
        answer = self._answer(url)
        return answer is not None and answer.get("ready", True) is True

    def _answer(self, url: str) -> dict[str, object] | None:
        try:
            response = self._client.get(f"{url.rstrip('/')}/healthz")
            if not response.is_success:
                return None
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HealthProbe:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
