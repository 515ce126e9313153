"""JSON from untrusted peers: nesting depth is checked before the bytes are parsed.

``json.loads`` recurses once per ``[`` or ``{``, so a few kilobytes of ``[[[[...`` raise
:class:`RecursionError` deep inside the parser. :func:`loads_untrusted` first measures the
nesting depth with a flat scan (regular expressions, no recursion), refuses anything deeper
than the caller's format allows, and turns every parse failure into :class:`UntrustedJSONError`,
which each caller re-raises as its own error (``CodecError``, ``ConfigError``).
"""

from __future__ import annotations

import json
import re

# A JSON string (escapes included): what a bracket inside a name must not be counted from.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


class UntrustedJSONError(ValueError):
    """Bytes that are not JSON of the expected shape; the message says why (no full stop)."""


def nesting_depth(raw: bytes, *, limit: int) -> int:
    """The deepest nesting of ``[`` and ``{`` in ``raw`` outside strings, counted up to
    ``limit + 1`` (the scan stops there). Unbalanced brackets are left to the parser."""
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw))
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def loads_untrusted(raw: bytes, *, max_depth: int) -> object:
    """``json.loads`` of UTF-8 ``raw`` nested at most ``max_depth`` deep, or
    :class:`UntrustedJSONError` saying what is wrong."""
    depth = nesting_depth(raw, limit=max_depth)
    if depth > max_depth:
        raise UntrustedJSONError(
            f"it nests arrays and objects more than {max_depth} deep, deeper than the format "
            "ever does"
        )
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UntrustedJSONError(f"it is not UTF-8 ({exc})") from None
    except RecursionError:  # not reached after the depth check; kept so it can never escape
        raise UntrustedJSONError("it nests too deep to parse") from None
    except ValueError as exc:  # JSONDecodeError, and integers over Python's digit limit
        raise UntrustedJSONError(f"it is not valid JSON ({exc})") from None
