"""The ``allmende`` command: one module a sub-command, assembled in :mod:`allmende.cli.main`."""
