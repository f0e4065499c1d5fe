"""The exceptions of ringshm.

Every error derives from RingError and also from the builtin a user of
queue/multiprocessing would already catch (Full is a queue.Full, and so on).
"""

import queue

__all__ = [
    "RingError", "Full", "Empty", "ShutDown", "MessageTooLarge",
    "RingExists", "RingNotFound", "RingCorrupted",
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
