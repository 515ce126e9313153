"""The data plane: the node's HTTP API, the peer client, EIP-712 signed messages."""
