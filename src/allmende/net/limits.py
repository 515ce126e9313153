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

# Fair sharing of the API among peers (net.fairshare): connections one peer (one IPv4 address,
# or one IPv6 /64) may hold open, and requests it may have in flight, below the global limit.
DEFAULT_MAX_CONNECTIONS_PER_PEER = 512
DEFAULT_MAX_REQUESTS_PER_PEER = 256
# A response whose peer read nothing of it for this long is dropped (its connection aborted).
DEFAULT_SEND_TIMEOUT_SECONDS = 30.0

# Blob downloads (net.client): a whole download from one peer may take at most this long, and
# after its first window it must average this rate over the last window, else the next holder
# is tried.
DEFAULT_FETCH_DEADLINE_SECONDS = 600.0
DEFAULT_FETCH_MIN_BYTES_PER_SECOND = 8 * 1024
DEFAULT_FETCH_RATE_WINDOW_SECONDS = 30.0
