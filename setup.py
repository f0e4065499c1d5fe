"""Builds the compiled core, ringshm._ring.

RINGSHM_DEBUG=1 builds with -O0 -g, assertions and Cython line tracing,
for gdb/valgrind and coverage of the .pyx.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("RINGSHM_DEBUG") == "1"
# The C that Cython writes differs between the two builds (line tracing):
# switching builds must regenerate it, not only recompile it.
FORCE = os.environ.get("RINGSHM_FORCE") == "1"

extension = Extension(
    "ringshm._ring",
    # The library as one unit (ringshm/_libringshm.c includes its files).
    sources=["ringshm/_ring.pyx", "ringshm/_libringshm.c"],
    include_dirs=["ringshm", "libringshm/include", "libringshm/src"],
    extra_compile_args=(["-O0", "-g3", "-UNDEBUG"] if DEBUG else ["-O2"])
    + ["-Wno-unused-function"],
    define_macros=[("CYTHON_TRACE_NOGIL", "1")] if DEBUG else [],
    libraries=["pthread"],
)

setup(
    ext_modules=cythonize(
        [extension],
        compiler_directives={"linetrace": DEBUG},
        language_level=3,
        force=FORCE,
    ),
)
