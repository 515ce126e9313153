"""The node's roles as services reacting to chain events: trainer and aggregator.

:func:`role_services_for` is what :func:`allmende.node.process.role_services` calls: one service
per role named in ``[node] roles`` (an offline node runs none). The roles' settings live in
:mod:`allmende.node.config`; what they read from peers is checked by
:mod:`allmende.node.jobdata`.
"""

from __future__ import annotations

from allmende.node.config import NodeConfig
from allmende.node.context import RoleService
from allmende.node.roles.aggregator import AggregatorRole
from allmende.node.roles.trainer import TrainerRole


def role_services_for(config: NodeConfig) -> list[RoleService]:
    """The role services of a node with ``config``."""
    if config.chain.offline:
        return []
    services: list[RoleService] = []
    if "trainer" in config.node.roles:
        services.append(TrainerRole(config.trainer))
    if "aggregator" in config.node.roles:
        services.append(AggregatorRole(config.aggregator))
    return services
