"""ringshm: fast, crash-proof message passing between processes through a
shared-memory ring buffer.  See README.md."""

from ringshm._version import __version__

try:
    from ringshm import _ring  # noqa: F401 -- the compiled core
except ImportError as exc:
    # Run from a checkout whose ringshm/ folder shadows an installed copy,
    # or a checkout that was never built: say what to do.
    raise ImportError(
        f"ringshm's compiled core (ringshm._ring) is missing from {__path__[0]}: {exc}. "
        "In a source checkout run `pip install -e .` or `python setup.py build_ext "
        "--inplace`; to use an installed ringshm, run from another directory.",
        name="ringshm._ring") from exc

from ringshm.errors import (
    Empty,
    Full,
    MessageTooLarge,
    RingCorrupted,
    RingError,
    RingExists,
    RingNoSpace,
    RingNotFound,
    RingPermissionError,
    ShutDown,
)
from ringshm.queue import JoinableQueue, Queue, SimpleQueue
from ringshm.ring import Ring

__all__ = [
    "Ring", "Queue", "JoinableQueue", "SimpleQueue",
    "RingError", "Full", "Empty", "ShutDown", "MessageTooLarge",
    "RingExists", "RingNotFound", "RingCorrupted", "RingPermissionError", "RingNoSpace",
    "__version__",
]
