"""Builds the compiled core, ringshm._ring, and libringshm for C programs.

RINGSHM_DEBUG=1 builds with -O0 -g, assertions and Cython line tracing,
for gdb/valgrind and coverage of the .pyx.

build_ext also builds the C library into the package, for C programs that
build against an installed ringshm (ringshm.get_include(),
ringshm.get_library_dir()): libringshm/src/*.c compiled with the compiler
and flags setuptools uses for the extension, archived as
ringshm/lib/libringshm.a, and libringshm/include/ringshm.h copied to
ringshm/include/.  Only the static library: a program linked with
`-L$(get_library_dir) -lringshm` then runs without the Python package
beside it (a libringshm.so in site-packages would need an rpath into a
virtual environment, and break when that goes or is upgraded).  The
shared library is `make -C libringshm install`'s.
"""

import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("RINGSHM_DEBUG") == "1"
# The C that Cython writes differs between the two builds (line tracing):
# switching builds must regenerate it, not only recompile it.
FORCE = os.environ.get("RINGSHM_FORCE") == "1"

extension = Extension(
    "ringshm._ring",
    # The library as one unit (ringshm/_libringshm.c includes its files).
    sources=["ringshm/_ring.pyx", "ringshm/_libringshm.c"],
    include_dirs=["ringshm", "libringshm/include", "libringshm/src"],
    # Rebuild when a file of the library changes (they are included, not
    # listed as sources).
    depends=sorted(glob.glob("libringshm/src/*.[ch]")) + ["libringshm/include/ringshm.h"],
    extra_compile_args=(["-O0", "-g3", "-UNDEBUG"] if DEBUG else ["-O2"])
    + ["-Wno-unused-function"],
    define_macros=[("CYTHON_TRACE_NOGIL", "1")] if DEBUG else [],
    libraries=["pthread"],
)

LIBRINGSHM = "libringshm"
# What build_ext adds to the package, relative to the package's folder.
# atomic.h and futex.h are the library's internals, carried for the bench's
# C programs (ringshm.bench.cref), which measure the library's own futex code.
CLIB_HEADERS = ["ringshm.h", "atomic.h", "futex.h"]
CLIB_FILES = [os.path.join("include", h) for h in CLIB_HEADERS] + [
    os.path.join("lib", "libringshm.a")]


class build_ext_with_clib(build_ext):
    """build_ext that first builds libringshm into the package (see the top
    of this file); `--inplace` and editable installs copy it into the
    source tree's ringshm/ as they do the extension."""

    def build_extensions(self):
        self.build_clib_into(os.path.join(self.build_lib, "ringshm"))
        super().build_extensions()

    def build_clib_into(self, package):
        sources = sorted(glob.glob(os.path.join(LIBRINGSHM, "src", "*.c")))
        headers = sorted(glob.glob(os.path.join(LIBRINGSHM, "src", "*.h")))
        header = os.path.join(LIBRINGSHM, "include", "ringshm.h")
        archive = os.path.join(package, "lib", self.compiler.library_filename("ringshm"))
        self.mkpath(os.path.join(package, "include"))
        for name in CLIB_HEADERS:
            where = "include" if name == "ringshm.h" else "src"
            self.copy_file(os.path.join(LIBRINGSHM, where, name),
                           os.path.join(package, "include", name))
        newest = max(os.path.getmtime(f) for f in sources + headers + [header, __file__])
        if not self.force and os.path.exists(archive) and os.path.getmtime(archive) >= newest:
            return
        objects = self.compiler.compile(
            sources,
            output_dir=os.path.join(self.build_temp, "clib"),
            include_dirs=[os.path.join(LIBRINGSHM, "include"), os.path.join(LIBRINGSHM, "src")],
            # As libringshm/Makefile: C11, only the rs_* API visible (-fPIC
            # comes with the compiler setuptools sets up for extensions).
            extra_postargs=(["-O0", "-g3", "-UNDEBUG"] if DEBUG else ["-O2"])
            + ["-std=c11", "-fvisibility=hidden"],
            depends=headers + [header],
            debug=self.debug,
        )
        self.mkpath(os.path.dirname(archive))
        if os.path.exists(archive):
            os.remove(archive)
        self.compiler.create_static_lib(objects, "ringshm", output_dir=os.path.dirname(archive),
                                        debug=self.debug)

    def copy_extensions_to_source(self):
        super().copy_extensions_to_source()
        for built, source in self.clib_mapping().items():
            self.mkpath(os.path.dirname(source))
            self.copy_file(built, source, level=self.verbose)

    def clib_mapping(self):
        """{file in build_lib: its place in the source tree} of CLIB_FILES."""
        package = self.get_finalized_command("build_py").get_package_dir("ringshm")
        return {os.path.join(self.build_lib, "ringshm", f): os.path.join(package, f)
                for f in CLIB_FILES}

    def get_outputs(self):
        if self.inplace:
            return super().get_outputs()   # the keys of get_output_mapping()
        return super().get_outputs() + list(self.clib_mapping())

    def get_output_mapping(self):
        mapping = super().get_output_mapping()
        if self.inplace:
            mapping.update(self.clib_mapping())
        return mapping


setup(
    cmdclass={"build_ext": build_ext_with_clib},
    ext_modules=cythonize(
        [extension],
        compiler_directives={"linetrace": DEBUG},
        language_level=3,
        force=FORCE,
    ),
)
