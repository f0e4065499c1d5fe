"""Sphinx glue for the ringshm site: pages generated from the sources.

- ``.. ringshm-cli::`` renders ``ringshm --help`` and every subcommand's
  help, from the argparse parser itself (ringshm.cli.build_parser), so the
  reference cannot drift from the command.
- ``.. c-header:: PATH`` renders a C header's comments and declarations
  (libringshm/include/ringshm.h) as C-domain entries: the header is the
  C API's documentation, so the page is made from it, not copied.
- the ``include-read`` hook rewrites the links of the Markdown files the site
  includes (README.md, docs/*.md, ...), which are written for browsing the
  repository: ``docs/FORMAT.md`` becomes the site's ``format.md``, an image
  under bench/results/ is found from docs/site/, and a link to a source file
  that is no page goes to the repository (``ringshm_source_url``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import posixpath
import re
from pathlib import Path
from typing import Any, Iterator

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

ROOT = Path(__file__).resolve().parents[3]   # the repository
SITE = ROOT / "docs" / "site"

# Repository files that are pages of the site (the page includes the file).
PAGES = {
    "README.md": "index.md",
    "docs/DESIGN.md": "design.md",
    "docs/FORMAT.md": "format.md",
    "docs/RELIABILITY.md": "reliability.md",
    "docs/PERFORMANCE.md": "performance.md",
    "bench/README.md": "benchmarks.md",
    "examples/c/README.md": "c-library.md",
    "examples/c": "c-library.md",
    "libringshm/include/ringshm.h": "c-api.rst",
    "CHANGELOG.md": "changelog.md",
}

_LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^()\s]+)\)")


def rewrite_links(text: str, included: str, source_url: str) -> str:
    """`text` (the repository file `included`, a path from the repository's
    root) with its relative links and images pointed at the site."""
    base = posixpath.dirname(included)

    def fix(match: re.Match[str]) -> str:
        bang, label, target = match.groups()
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            return match.group(0)            # a URL, or an anchor of this page
        path, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(base, path)).rstrip("/")
        if bang:                              # an image: the file, from docs/site/
            new = posixpath.relpath(repo_path, "docs/site")
        elif repo_path in PAGES:
            page = PAGES[repo_path]
            # A page's own file: a plain anchor; a reST page: its document name.
            new = page if page.endswith(".md") else "/" + page.rsplit(".", 1)[0]
            if page.endswith(".rst"):
                return f"{{doc}}`{label} <{new}>`"
        else:
            new = f"{source_url}/{'tree' if (ROOT / repo_path).is_dir() else 'blob'}" \
                  f"/main/{repo_path}"
        return f"{bang}[{label}]({new}{'#' + anchor if anchor else ''})"

    return _LINK.sub(fix, text)


def _on_include_read(app: Sphinx, relative_path: Path, parent_docname: str,
                     content: list[str]) -> None:
    absolute = (Path(app.srcdir) / relative_path).resolve()
    try:
        included = absolute.relative_to(ROOT).as_posix()
    except ValueError:
        return
    if included.endswith(".md"):
        content[0] = rewrite_links(content[0], included, app.config.ringshm_source_url)


# -- the command line ----------------------------------------------------------

def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def _load(spec: str) -> argparse.ArgumentParser:
    module, _, name = spec.partition(":")
    parser: argparse.ArgumentParser = getattr(importlib.import_module(module), name)()
    return parser


class CliDirective(SphinxDirective):
    """Every ``--help`` of a command, one section per subcommand.

    The argument is ``module:function`` returning the parser; the option
    ``delegate`` maps a subcommand that parses its own arguments to its
    parser (``bench=ringshm.bench.cli:build_parser``, comma-separated).
    """

    required_arguments = 1
    option_spec = {"delegate": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        delegates = {}
        for item in filter(None, (self.options.get("delegate") or "").split(",")):
            command, _, spec = item.strip().partition("=")
            delegates[command] = spec
        old = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = "88"          # argparse wraps to the terminal
        try:
            lines = self._render(_load(self.arguments[0]), delegates)
        finally:
            if old is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = old
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, "<ringshm-cli>"), node)
        return node.children

    def _render(self, top: argparse.ArgumentParser,
                delegates: dict[str, str]) -> list[str]:
        lines: list[str] = []

        def emit(parser: argparse.ArgumentParser, depth: int, path: list[str]) -> None:
            title = " ".join(path)
            if depth:
                lines.extend([title, "-~^"[depth - 1] * len(title), ""])
            help_text = parser.format_help().rstrip()
            lines.extend([".. code-block:: text", ""]
                         + ["    " + line for line in help_text.splitlines()] + [""])
            for name, sub in _subcommands(parser):
                if depth == 0 and name in delegates:
                    sub = _load(delegates[name])
                    sub.prog = f"{top.prog} {name}"
                emit(sub, depth + 1, path + [name])

        emit(top, 0, [top.prog])
        return lines


# -- the C header --------------------------------------------------------------

def _comment_text(comment: str) -> list[str]:
    """A /* */ comment's lines, without the frame, with `x` as literal text."""
    body = comment.strip()[2:-2]
    lines = []
    for line in body.splitlines():
        line = re.sub(r"^\s*\* ?", "", line) if line.strip().startswith("*") else line.strip()
        lines.append(line.rstrip())
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return _inline("\n".join(lines)).splitlines()


_TOKEN = re.compile(
    r"/\*.*?\*/"                                    # a comment
    r"|^[ \t]*#[^\n]*"                              # a preprocessor line
    r"|\n[ \t]*\n"                                  # a blank line: ends a group
    r'|^[ \t]*(?:extern[ \t]+"C"[ \t]*\{|\})[ \t]*$'  # C++ linkage
    r"|(?:typedef\s+)?struct\s+\w+\s*\{[^}]*\}[^;]*;"  # a struct, with its members
    r"|[^;/#\s][^;]*?;"                             # a declaration
    r"|\S[^\n]*",                                   # anything else
    re.S | re.M)


def _members(body: str) -> list[str]:
    """reST for the members of a struct body, each with its trailing comment."""
    out: list[str] = []
    for line in body.splitlines():
        match = re.match(r"\s*([^;]+);\s*(?:/\*\s*(.*?)\s*\*/)?\s*$", line)
        if not match:
            continue
        declaration, doc = match.groups()
        first, *rest = [part.strip() for part in declaration.split(",")]
        type_ = re.match(r"(.*?)(\**\s*\w+)$", first)
        assert type_, line
        base = type_.group(1).strip()
        for name in [type_.group(2).strip()] + rest:
            if name.lstrip("*").startswith("_"):
                continue                   # the library's own fields
            out.extend([f"   .. c:member:: {base} {name}", ""])
            if doc:
                out.extend([f"      {_inline(doc)}", ""])
    return out


def render_header(text: str, outline: dict[str, str] | None = None) -> list[str]:
    """reST for a C header: the leading comment, then each group of
    declarations after the comment that describes it.  `outline` maps a
    declared name to the title of a section that starts with its group."""
    outline = dict(outline or {})
    lines: list[str] = []
    pending: list[str] = []        # a comment waiting for its declarations
    # C keeps struct tags apart from other names, Sphinx's C domain does not:
    # a struct named as a function (struct rs_stats, rs_stats()) is shown
    # as its code, and the name is the function's.
    functions = set(re.findall(r"(\w+)\s*\([^()]*(?:\([^()]*\)[^()]*)*\)\s*;", text))
    first = True
    guard = False
    skip_depth = 0

    def flush(name: str = "") -> None:
        title = outline.pop(name, None)
        if title:
            lines.extend([title, "-" * len(title), ""])
        if pending:
            lines.extend(pending + [""])
            pending.clear()

    for match in _TOKEN.finditer(text):
        token = match.group(0)
        stripped = token.strip()
        if not stripped:                              # a blank line
            flush()
            continue
        if stripped.startswith("/*"):
            if first:                                  # the header's own comment
                first = False
                lines.extend(_comment_text(stripped)[1:] + [""])
                continue
            flush()
            pending.extend(_comment_text(stripped))
            continue
        if stripped.startswith("#"):
            if re.match(r"#\s*if", stripped):
                if guard:
                    skip_depth += 1        # #if blocks: compiler plumbing (RS_API, C++)
                guard = True               # the first #ifndef is the include guard
                continue
            if re.match(r"#\s*endif", stripped):
                skip_depth = max(0, skip_depth - 1)
                continue
            if skip_depth:
                continue
            define = re.match(r"#define\s+(\w+)\s+(.*?)\s*(?:/\*\s*(.*?)\s*\*/)?$", stripped)
            if define and define.group(1) != "RINGSHM_H":
                name, value, doc = define.groups()
                flush(name)
                lines.extend([f".. c:macro:: {name}", "", f"   ``{value}``"
                              + (f": {_inline(doc)}" if doc else ""), ""])
            continue
        if skip_depth or stripped in ("}", 'extern "C" {'):
            continue
        declaration = re.sub(r"\s+", " ", stripped.replace("RS_API ", "")).rstrip(";").strip()
        declared = re.match(r"(?:typedef )?struct (\w+) \{|typedef struct \w+ (\w+)$"
                            r"|.*?\(\*(\w+)\)|[^(]*?(\w+)\(", declaration)
        flush(next(filter(None, declared.groups()), "") if declared else "")
        struct = re.match(r"(typedef )?struct (\w+) \{(.*)\}\s*(\w*)", declaration, re.S)
        if struct:
            body = stripped[stripped.index("{") + 1:stripped.rindex("}")]
            name = struct.group(2)
            if name in functions:
                lines.extend([".. code-block:: c", ""]
                             + ["   " + line for line in stripped.splitlines()] + [""])
            else:
                lines.extend([f".. c:struct:: {name}", ""] + _members(body))
        elif re.match(r"typedef struct (\w+) (\w+)$", declaration):
            name = declaration.split()[-1]
            lines.extend([f".. c:struct:: {name}", "",
                          "   An opaque handle: only pointers to it are used.", ""])
        elif declaration.startswith("typedef "):
            lines.extend([f".. c:type:: {declaration[len('typedef '):]}", ""])
        else:
            lines.extend([f".. c:function:: {declaration}", ""])
    flush()
    if outline:
        raise ValueError(f"c-header outline: no declaration named {', '.join(outline)}")
    return lines


def _inline(text: str) -> str:
    """C comment text as reST: `x` literal, the rest escaped where reST
    would read markup into it (``*``, ``|``, a trailing ``_``)."""
    parts = re.split(r"(`[^`]+`)", text)
    for i, part in enumerate(parts):
        if i % 2:
            parts[i] = f"`{part}`"
        else:
            part = re.sub(r"([*|`\\])", r"\\\1", part)
            parts[i] = re.sub(r"(\w)_(?!\w)", r"\1\\_", part)
    return "".join(parts)


class CHeaderDirective(SphinxDirective):
    """A C header's comments and declarations, as C-domain entries.  The
    content, lines of ``NAME: Title``, starts a section titled Title at the
    group that declares NAME."""

    required_arguments = 1
    has_content = True

    def run(self) -> list[nodes.Node]:
        path = (Path(self.env.srcdir) / self.arguments[0]).resolve()
        self.env.note_dependency(str(path))
        outline = dict((part.strip() for part in line.split(":", 1))
                       for line in self.content if line.strip())
        try:
            lines = render_header(path.read_text(), outline)
        except ValueError as exc:
            raise self.error(str(exc)) from exc
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, str(path)), node)
        return node.children


# -- docstrings ------------------------------------------------------------------

def _keep_property_docstring(app: Sphinx, what: str, name: str, obj: object,
                             options: Any, lines: list[str]) -> None:
    """Napoleon reads a property docstring's first line as "type: text";
    ringshm's are prose ("Where the ring lives: ..."): keep them as written
    (runs before napoleon, then after it, to undo what it did)."""
    if what == "property":
        saved = app.env.temp_data.setdefault("ringshm_property_lines", {})
        if name in saved:
            lines[:] = saved.pop(name)
        else:
            saved[name] = list(lines)


_IDENTIFIER = re.compile(r"~?[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*(\(\))?$")


def _prose_reference(app: Sphinx, domain: Any, node: nodes.Element) -> bool | None:
    """A "type" napoleon found in prose ("Raises: KeyboardInterrupt (or what
    a signal handler raises) during the wait."): not a name, so no link and
    no warning.  A target that is a name still warns (nitpicky)."""
    if getattr(domain, "name", None) == "py" and not _IDENTIFIER.match(node.get("reftarget", "")):
        return True
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("ringshm_source_url", "https://github.com/ringshm/ringshm", "env")
    app.add_directive("ringshm-cli", CliDirective)
    app.add_directive("c-header", CHeaderDirective)
    app.connect("include-read", _on_include_read)
    app.connect("autodoc-process-docstring", _keep_property_docstring, priority=400)
    app.connect("autodoc-process-docstring", _keep_property_docstring, priority=600)
    app.connect("warn-missing-reference", _prose_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
