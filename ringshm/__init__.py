"""ringshm: fast, crash-proof message passing between processes through a
shared-memory ring buffer.  See README.md."""

from ringshm._version import __version__
from ringshm.errors import (
    Empty,
    Full,
    MessageTooLarge,
    RingCorrupted,
    RingError,
    RingExists,
    RingNotFound,
    ShutDown,
)
from ringshm.queue import JoinableQueue, Queue, SimpleQueue
from ringshm.ring import Ring

__all__ = [
    "Ring", "Queue", "JoinableQueue", "SimpleQueue",
    "RingError", "Full", "Empty", "ShutDown", "MessageTooLarge",
    "RingExists", "RingNotFound", "RingCorrupted", "__version__",
]
