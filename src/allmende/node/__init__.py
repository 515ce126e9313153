"""The node process: config, identity, and the roles that react to chain events."""
