"""The control plane: contract compilation and deployment, typed bindings, the Anvil devnet."""
