"""Sphinx configuration of the ringshm site (`make docs`).

The pages include the repository's Markdown (README.md, docs/*.md, ...)
rather than copying it; _ext/ringshm_docs.py makes the CLI and C API
references from the parser and the header.  No intersphinx: the site builds
offline, so names of the standard library are left unlinked (see
nitpick_ignore_regex below) and every other reference must resolve.
"""

import builtins
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import ringshm  # noqa: E402  (the installed package: pip install -e '.[docs]')

project = "ringshm"
author = "the ringshm authors"
copyright = "ringshm authors"
release = ringshm.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "ringshm_docs",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]
templates_path: list = []

# Where the sources are browsed; links to repository files that are not
# pages of the site go there.  A placeholder until the project is hosted.
ringshm_source_url = "https://github.com/ringshm/ringshm"

# -- MyST ------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 4          # README.md and docs/*.md link to #sections
# The included Markdown starts at "##" under a page's own "#" heading, or
# below: MyST's "non-consecutive heading level" note is not a defect there.
suppress_warnings = ["myst.header"]

# -- autodoc ---------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Defaults as written (`mode=0o600`, `spin=DEFAULT_SPIN`), not 384 and this CPU's value.
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# The docstrings write `name` for code (as in the README).
default_role = "code"

# -- references ------------------------------------------------------------------
nitpicky = True
nitpick_ignore = [
    # C: the standard types the header uses.
    *[("c:identifier", name) for name in (
        "int64_t", "uint64_t", "uint32_t", "size_t", "ssize_t", "pid_t", "iovec")],
]
_stdlib = "|".join(["typing", "collections", "asyncio", "multiprocessing", "queue", "pickle",
                    "types", "concurrent", "threading", "os", "socket", "ssl", "nats",
                    "numpy", "_io", "_queue", "io", "typing_extensions", "enum", "pathlib",
                    "contextlib", "weakref"])
_builtins = "|".join(sorted(name for name in dir(builtins) if not name.startswith("_")))
nitpick_ignore_regex = [
    # Without intersphinx, the standard library's names cannot link.
    (r"py:(class|exc|obj|func|data|meth)", rf"(~?({_stdlib})\..*|{_builtins})"),
    # Type variables and type aliases of ringshm's annotations.
    (r"py:(class|obj)", r"(ringshm\.\w+\.)?(T|W|R|Dumps|Loads|Buffer|ReadableBuffer)"),
]

# -- HTML ------------------------------------------------------------------------
html_theme = "furo"
html_title = f"ringshm {release}"
html_static_path: list = []
html_show_sourcelink = False
