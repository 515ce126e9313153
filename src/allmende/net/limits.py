"""Limits a node puts on what peers send it, named apart from the HTTP stack.

Node configuration reads these defaults; keeping them here lets the light commands (``allmende
node init``, ``--help``) start without importing the web framework or the signing libraries.
"""

# A message body larger than this is refused (413) before it is parsed.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024

# Default lifetime of a message a node signs; a receiver refuses expiries further ahead than
# MAX_MESSAGE_TTL_SECONDS. Peers need clocks within a few seconds of each other.
DEFAULT_MESSAGE_TTL_SECONDS = 120
MAX_MESSAGE_TTL_SECONDS = 600
