"""Names on the NATS side: message ids, and the stream and consumer names a
bridge uses when none is given.

A message id (the ``Nats-Msg-Id`` header) is ``ringshm:IDENTITY:SEQUENCE``:
the source ring's identity (32 hex digits, ``Ring.identity``) and the
message's number in that ring (its count of consumed messages when it was
the oldest, from 0).  A restarted out bridge numbers the same message the
same way, so JetStream's duplicate window drops a second copy, and the
stream's last message says how far this ring got (ringshm/bridge/out.py).
"""

from __future__ import annotations

import re
from typing import Optional

_PREFIX = "ringshm"
_MSG_ID = re.compile(r"ringshm:([0-9a-f]{32}):(0|[1-9][0-9]{0,19})")
# JetStream names: no whitespace, '.', '*', '>', path separators.
_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]")


def msg_id(identity: str, sequence: int) -> str:
    """The message id of message `sequence` of the ring `identity`."""
    return f"{_PREFIX}:{identity}:{sequence}"


def parse_msg_id(text: Optional[str]) -> Optional[tuple[str, int]]:
    """(identity, sequence) of a message id made by msg_id(); None for
    anything else (another publisher's id, garbage, a number too big for the
    ring's 64-bit counters)."""
    if text is None:
        return None
    match = _MSG_ID.fullmatch(text)
    if match is None:
        return None
    sequence = int(match.group(2))
    if sequence >= 1 << 64:
        return None
    return match.group(1), sequence


def default_stream(subject: str) -> str:
    """The stream a bridge creates for `subject` when given none."""
    return "ringshm_" + _NOT_NAME.sub("_", subject)


def default_durable(stream: str) -> str:
    """The in bridge's durable consumer when given none."""
    return _NOT_NAME.sub("_", stream) + "_in"
