"""The README's Python examples run as written."""

import pathlib
import re
import subprocess
import sys

import pytest
from conftest import needs_checkout, read_checkout

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", read_checkout("README.md"), re.S)

pytestmark = needs_checkout("README.md")


def test_readme_has_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs(index, tmp_path):
    # A fresh interpreter per example, from a file: they fork or spawn, and
    # must stand alone.
    script = tmp_path / f"example_{index}.py"
    script.write_text(EXAMPLES[index])
    result = subprocess.run([sys.executable, str(script)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# The tests the README names ("Where the ideas come from"): `tests/F.py::name`,
# `::name` after a comma meaning the same file, `[params]` dropped.
NAMED_TESTS = re.findall(r"`(tests/[\w/]+\.py)?::(\w+)(?:\[[^\]]*\])?`", read_checkout("README.md"))


def test_readme_names_tests_that_exist():
    assert len(NAMED_TESTS) >= 5
    current = None
    for path, name in NAMED_TESTS:
        current = path or current
        source = (README.parent / current).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"{current}::{name} is gone"
