"""The exceptions of ringshm.

Every error derives from RingError and also from the builtin a user of
queue/multiprocessing would already catch (Full is a queue.Full, and so on).
"""

import errno
import queue
from typing import Optional

__all__ = [
    "RingError", "Full", "Empty", "ShutDown", "MessageTooLarge",
    "RingExists", "RingNotFound", "RingCorrupted", "RingPermissionError", "RingNoSpace",
    "RingWrongKind", "Lagged",
]

# queue.ShutDown exists from Python 3.13 on; before that ShutDown has no
# builtin twin.
_QueueShutDown = getattr(queue, "ShutDown", Exception)


class RingError(Exception):
    """Base class of every ringshm error."""


class Full(RingError, queue.Full):
    """No room for the message within the time allowed."""


class Empty(RingError, queue.Empty):
    """No message within the time allowed."""


class ShutDown(RingError, _QueueShutDown):  # type: ignore[misc, valid-type]
    """The ring was shut down: no more puts; gets only drain what is left."""


class MessageTooLarge(RingError, ValueError):
    """A message or batch that can never fit in the ring."""


class RingExists(RingError, FileExistsError):
    """create() of a name or path that already exists."""


class RingNotFound(RingError, FileNotFoundError):
    """open() of a name or path that does not exist."""


class RingCorrupted(RingError):
    """The segment is not a ring, is of an unknown layout, is truncated, or
    holds a record that fails validation."""


class RingWrongKind(RingCorrupted, ValueError):
    """A topic opened as a ring (Ring.open) or a ring as a topic
    (Topic.open).  Nothing was changed: the segment is sound, only of the
    other kind.  A RingCorrupted too, so that code that skips what is not a
    ring (``ringshm ls``) skips a topic."""


class Lagged(RingError):
    """An untethered subscriber was overrun: ``missed`` messages published
    after it subscribed were written over before it took them.  Nothing
    was taken; the next get continues with the oldest message still held."""

    def __init__(self, missed: int, message: Optional[str] = None) -> None:
        super().__init__(message or f"this subscriber was overrun: {missed} message"
                         f"{'' if missed == 1 else 's'} lost")
        self.missed = missed

    def __reduce__(self) -> tuple[object, ...]:
        return (Lagged, (self.missed, self.args[0] if self.args else None))


class RingPermissionError(RingError, PermissionError):
    """The segment may not be attached: it belongs to another user (see
    ``any_owner``), it is a symbolic link, or the system refused access."""


class RingNoSpace(RingError, OSError):
    """create(reserve=True) found too little room in the file system that
    backs the ring (/dev/shm, or the file's).  ``errno`` is ENOSPC;
    ``needed`` and ``free`` are byte counts (``free`` is None if unknown)."""

    def __init__(self, needed: int, free: Optional[int], where: str) -> None:
        free_text = "an unknown number of bytes" if free is None else f"{free} bytes"
        super().__init__(errno.ENOSPC,
                         f"no room for the ring: it needs {needed} bytes and the file "
                         f"system has {free_text} free (a smaller capacity, more room, "
                         f"e.g. docker run --shm-size, or reserve=False)", where)
        self.needed = needed
        self.free = free
