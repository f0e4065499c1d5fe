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
from ringshm.queue import Queue
from ringshm.ring import Ring

__all__ = [
    "Ring", "Queue", "RingError", "Full", "Empty", "ShutDown", "MessageTooLarge",
    "RingExists", "RingNotFound", "RingCorrupted", "__version__",
]
