"""The node's roles as services reacting to chain events: trainer and aggregator.

:func:`role_services_for` is what :func:`allmende.node.process.role_services` calls: one service
per role named in ``[node] roles`` (an offline node runs none). Role modules are imported
lazily, because the config module imports :mod:`allmende.node.roles.settings` from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from allmende.node.config import NodeConfig
    from allmende.node.process import RoleService


def role_services_for(config: NodeConfig) -> list[RoleService]:
    """The role services of a node with ``config``."""
    from allmende.node.roles.aggregator import AggregatorRole
    from allmende.node.roles.trainer import TrainerRole

    if config.chain.offline:
        return []
    services: list[RoleService] = []
    if "trainer" in config.node.roles:
        services.append(TrainerRole(config.trainer))
    if "aggregator" in config.node.roles:
        services.append(AggregatorRole(config.aggregator))
    return services
