"""Privacy for data owners: secure aggregation (:mod:`allmende.privacy.secagg`)."""

from allmende.privacy.params import SecureSpec, check_secure, graph_size

__all__ = ["SecureSpec", "check_secure", "graph_size"]
