"""Content-addressed blob store, canonical tensor codec, SQLite node state."""
