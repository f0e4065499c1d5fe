"""Imports in the Python layer go one way: a module imports only modules
below it in LAYERS (docs/DESIGN.md, "Layers"), never one above, not even
inside a function or under TYPE_CHECKING.  The imports are read from the
source with `ast`; and each module imports on its own, in a fresh
interpreter (no module relies on another having been imported first)."""

import ast
import pathlib
import subprocess
import sys

import pytest
from conftest import child_env, needs_checkout, ringshm_home

import ringshm

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The package being tested: the checkout's, or an installed wheel's.
PACKAGE = pathlib.Path(ringshm.__file__).resolve().parent

# Lowest first.  A subpackage is one layer: its modules may import each
# other and anything below it.  "ringshm" is the package itself (its
# public names: `from ringshm import Ring`).
LAYERS = [
    "ringshm._version",
    "ringshm._typing",
    "ringshm.errors",
    "ringshm.watcher",        # also run as a standalone script: the standard library only
    "ringshm._ring",          # the compiled binding of libringshm
    "ringshm._backing",       # the backing interface, file handling
    "ringshm._file_backing",  # a name, a path, a memfd
    "ringshm._sysv_backing",  # a System V segment
    "ringshm.ring",           # Ring: create/open over any backing, pickling
    "ringshm.census",         # what `ringshm ls`/`gc` know of segments
    "ringshm._records",       # a Queue record's parts: Frame, sources, Taken
    "ringshm._sidefile",      # big items in side files
    "ringshm._items",         # the record forms, Codec
    "ringshm.queue",          # Queue, JoinableQueue, SimpleQueue
    "ringshm.topic",          # Topic, Subscription, ObjectTopic
    "ringshm.waiting",        # wait() over rings and queues
    "ringshm",                # the package's public names
    "ringshm._aiohelper",     # ringshm.asyncio's helper thread of each event loop
    "ringshm.asyncio",
    "ringshm._stress_common",  # what both stress modes share
    "ringshm.stress",
    "ringshm.stress_topic",   # ringshm stress --topic
    "ringshm.demo",
    "ringshm.top",            # the live view of every ring
    "ringshm.bridge",
    "ringshm._cli_common",    # what the command's modules share
    "ringshm.cli_topic",      # pub, sub, create --topic, info of a topic
    "ringshm.cli",
    "ringshm.__main__",
    "ringshm.bench",
]
COMPILED = {"ringshm._ring"}


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
KNOWN = set(MODULES) | COMPILED


def layer_of(module):
    """The index in LAYERS of `module` (a subpackage's modules share theirs)."""
    if module in LAYERS:
        return LAYERS.index(module)
    for index, name in enumerate(LAYERS):
        if name != "ringshm" and module.startswith(name + "."):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to DESIGN.md)")


def imported(module):
    """The ringshm modules that `module`'s source imports, anywhere in it."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                # `from ringshm import watcher` imports the module watcher;
                # `from ringshm import Ring` the package.
                full = f"{source}.{alias.name}"
                found.add(full if full in KNOWN else source)
    return {name for name in found if name == "ringshm" or name.startswith("ringshm.")}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


@needs_checkout("docs/DESIGN.md")
def test_the_layers_are_in_design_md():
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    section = text[text.index("## Layers"):]
    section = section[:section.index("\n## ", 1)]
    # The rows of the Python modules' table: dotted names, not paths.
    listed = [line.split("`")[1] for line in section.splitlines()
              if line.startswith("| `ringshm") and "/" not in line.split("`")[1]]
    assert listed == LAYERS


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down(module):
    mine = layer_of(module)
    upward = sorted(name for name in imported(module) if layer_of(name) > mine)
    assert not upward, f"{module} ({LAYERS[mine]}) imports higher modules: {upward}"


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The parse finds imports inside functions and under TYPE_CHECKING."""
    fake = tmp_path / "ringshm" / "_backing.py"
    fake.parent.mkdir()
    fake.write_text("from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n    from .ring import Ring\n"
                    "def f():\n    from ringshm import queue, Ring\n")
    monkeypatch.setitem(MODULES, "ringshm._backing", fake)
    assert imported("ringshm._backing") == {"ringshm.ring", "ringshm.queue", "ringshm"}


def test_each_module_imports_on_its_own():
    """Each module in a fresh interpreter of its own (two at a time)."""
    failed = {}
    pending = sorted(MODULES)
    running = []
    while pending or running:
        while pending and len(running) < 2:
            module = pending.pop()
            running.append((module, subprocess.Popen(
                [sys.executable, "-c", f"import {module}"], cwd=ringshm_home(), env=child_env(),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
        module, process = running.pop(0)
        try:
            _, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        if process.returncode != 0:
            failed[module] = err[-1000:]
    assert not failed, failed
