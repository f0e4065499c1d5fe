"""ringshm: fast, crash-proof message passing between processes through a
shared-memory ring buffer.  See README.md."""

import os

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
    Lagged,
    MessageTooLarge,
    RingCorrupted,
    RingError,
    RingExists,
    RingNoSpace,
    RingNotFound,
    RingPermissionError,
    RingWrongKind,
    ShutDown,
)
from ringshm.queue import JoinableQueue, Queue, SimpleQueue
from ringshm.ring import Ring
from ringshm.topic import ObjectSubscription, ObjectTopic, Subscription, Topic
from ringshm.waiting import wait

__all__ = [
    "Ring", "Queue", "JoinableQueue", "SimpleQueue", "wait",
    "Topic", "Subscription", "ObjectTopic", "ObjectSubscription",
    "RingError", "Full", "Empty", "ShutDown", "MessageTooLarge",
    "RingExists", "RingNotFound", "RingCorrupted", "RingPermissionError", "RingNoSpace",
    "RingWrongKind", "Lagged",
    "get_include", "get_library_dir",
    "__version__",
]


def _shipped(folder: str, file: str) -> str:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), folder)
    if not os.path.isfile(os.path.join(path, file)):
        raise FileNotFoundError(
            f"{file} is not in {path}: this ringshm was built without its C library. "
            "Reinstall it (`pip install .`; in a source checkout `pip install -e .` or "
            "`python setup.py build_ext --inplace`).")
    return path


def get_include() -> str:
    """The folder of ringshm.h, the C API of libringshm (the same rings from
    C), shipped inside this package: compile with ``-I`` it.

    ``cc prog.c -I"$(python3 -c 'import ringshm; print(ringshm.get_include())')"
    -L"$(python3 -c 'import ringshm; print(ringshm.get_library_dir())')"
    -lringshm -lpthread``

    Returns:
        The absolute path of the folder that holds ``ringshm.h``.

    Raises:
        FileNotFoundError: this copy of ringshm was built without the C
            library (a checkout built by an older setup.py).
    """
    return _shipped("include", "ringshm.h")


def get_library_dir() -> str:
    """The folder of libringshm.a, the C library built with this package
    (static only: a program linked with it does not need this package, or
    Python, to run): link with ``-L`` it ``-lringshm -lpthread``.

    Returns:
        The absolute path of the folder that holds ``libringshm.a``.

    Raises:
        FileNotFoundError: this copy of ringshm was built without the C
            library (a checkout built by an older setup.py).
    """
    return _shipped("lib", "libringshm.a")
