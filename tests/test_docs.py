"""The documentation site (docs/site/, `make docs`) builds without a warning,
its Python examples run, and it renders in a browser (headless Chromium)."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import zlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SITE = ROOT / "docs" / "site"
BUILD = ROOT / "build" / "docs"
SHOTS = BUILD / "_screenshots"      # the browser test's screenshots, kept as artifacts

DOC_TOOLS = ("sphinx", "furo", "myst_parser")
MISSING_TOOLS = [name for name in DOC_TOOLS if importlib.util.find_spec(name) is None]
needs_sphinx = pytest.mark.skipif(
    bool(MISSING_TOOLS),
    reason=f"the docs tools are not installed ({', '.join(MISSING_TOOLS)}): "
           "pip install -e '.[docs]'")


def _included_files() -> list[pathlib.Path]:
    """The repository's Markdown files that the site's pages include."""
    found = set()
    for page in SITE.glob("*.md"):
        for target in re.findall(r"^```\{include\}\s+(\S+)", page.read_text(), re.M):
            found.add((SITE / target).resolve())
    return sorted(found)


def _python_examples() -> list[tuple[str, str]]:
    """(where, code) for every ```python block of the site's own pages and of
    the files they include; README.md's are tests/test_readme.py's."""
    sources = sorted(SITE.glob("*.md")) + [
        path for path in _included_files() if path != ROOT / "README.md"]
    examples = []
    for path in sources:
        for i, code in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), re.S)):
            examples.append((f"{path.relative_to(ROOT)}#{i}", code))
    return examples


EXAMPLES = _python_examples()


@pytest.fixture(scope="module")
def site() -> pathlib.Path:
    """The site, built afresh (-E: every page read again, so that no warning
    hides in a cached page) with warnings as errors, as `make docs` does."""
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
         str(SITE), str(BUILD)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stderr.strip() == "", result.stderr[-4000:]
    return BUILD


@needs_sphinx
def test_site_builds_without_warnings(site: pathlib.Path) -> None:
    for page in ("index", "getting-started", "api", "c-api", "cli", "performance",
                 "reliability", "format", "design", "waiting", "c-library"):
        assert (site / f"{page}.html").is_file(), page


@needs_sphinx
def test_every_page_is_in_the_toctree(site: pathlib.Path) -> None:
    # Sphinx warns about an orphan page (-W: an error), but only if it is a
    # source; a page that failed to build would be missing from the output.
    for page in SITE.glob("*.*"):
        if page.suffix in (".md", ".rst"):
            assert (site / f"{page.stem}.html").is_file(), page.name


@needs_sphinx
def test_references_are_generated_from_the_sources(site: pathlib.Path) -> None:
    api = (site / "api.html").read_text()
    for name in ("ringshm.Ring", "ringshm.Ring.put", "ringshm.Ring.get_many", "ringshm.Queue",
                 "ringshm.JoinableQueue.join", "ringshm.SimpleQueue", "ringshm.wait",
                 "ringshm.ShutDown", "ringshm.RingNoSpace", "ringshm.get_include",
                 "ringshm.get_library_dir", "ringshm.asyncio.AsyncRing",
                 "ringshm.asyncio.AsyncQueue", "ringshm.bridge.run_out",
                 "ringshm.bridge.run_in"):
        assert f'id="{name}"' in api, name
    assert "Append one message." in api               # Ring.put's docstring, from Cython

    c_api = (site / "c-api.html").read_text()
    header = (ROOT / "libringshm" / "include" / "ringshm.h").read_text()
    for name in re.findall(r"^RS_API [^;(]*?\b(rs_\w+)\(", header, re.M):
        assert f'id="c.{name}"' in c_api, name
    assert "no room in time" in c_api                  # RS_FULL's comment

    from ringshm.cli import build_parser
    cli = (site / "cli.html").read_text()
    for action in build_parser()._subparsers._group_actions:   # type: ignore[union-attr]
        for command in action.choices:                          # type: ignore[union-attr]
            assert f"ringshm {command}</h2>" in re.sub(r"<a class=\"headerlink\".*?</a>", "",
                                                       cli), command
    text = re.sub(r"<[^>]+>", "", cli)
    assert "--capacity" in text and "--subject" in text and "--window" in text


@needs_sphinx
def test_links_between_pages_resolve(site: pathlib.Path) -> None:
    # The included Markdown links docs/*.md and #sections: each must land.
    ids: dict[pathlib.Path, set[str]] = {}
    for page in site.glob("*.html"):
        for href in re.findall(r'href="([^"]+)"', page.read_text()):
            if re.match(r"[a-z]+:", href):
                continue
            path, _, anchor = href.split("?")[0].partition("#")
            target = (page.parent / path) if path else page
            assert target.exists(), f"{page.name}: {href}"
            if anchor and target.suffix == ".html":
                if target not in ids:
                    ids[target] = set(re.findall(r'id="([^"]+)"', target.read_text()))
                assert anchor in ids[target], f"{page.name}: {href}"


def test_site_has_python_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("where, code", EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_site_example_runs(where: str, code: str, tmp_path: pathlib.Path) -> None:
    # As tests/test_readme.py: a fresh interpreter per example, from a file.
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 0, f"{where}:\n{result.stderr}"


# -- in a browser -------------------------------------------------------------------

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = _chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium; .ci/run does)")


def _browser(tmp_path: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
               *args]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")      # Chromium refuses to run as root otherwise
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def _png(path: pathlib.Path) -> tuple[int, int, bytes]:
    """Width, height and the decompressed pixel rows of a PNG file."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"IDAT":
            chunks.append(data[offset + 8:offset + 8 + length])
        offset += 12 + length
    return width, height, zlib.decompress(b"".join(chunks))


def _dom(site: pathlib.Path, page: str, tmp_path: pathlib.Path) -> str:
    result = _browser(tmp_path, "--dump-dom", (site / page).as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _headings(dom: str) -> list[str]:
    return [re.sub(r"<[^>]+>|¶", "", h).strip()
            for h in re.findall(r"<h[1-3][^>]*>(.*?)</h[1-3]>", dom, re.S)]


@needs_sphinx
@needs_chromium
def test_start_page_renders(site: pathlib.Path, tmp_path: pathlib.Path) -> None:
    dom = _dom(site, "index.html", tmp_path)
    headings = _headings(dom)
    assert headings[:3] == ["ringshm", "Install", "Quick start"], headings
    assert "Ring.create(capacity" in re.sub(r"<[^>]+>", "", dom)   # the README's first example
    # The navigation reaches the references.
    for page in ("api.html", "c-api.html", "cli.html", "performance.html"):
        assert f'href="{page}"' in dom, page
    _screenshot(site, "index.html", tmp_path)


@needs_sphinx
@needs_chromium
def test_api_page_renders(site: pathlib.Path, tmp_path: pathlib.Path) -> None:
    dom = _dom(site, "api.html", tmp_path)
    headings = _headings(dom)
    for heading in ("API reference", "Rings", "Queues", "Errors", "asyncio", "Bridges"):
        assert heading in headings, (heading, headings)
    assert 'id="ringshm.Ring.put"' in dom
    _screenshot(site, "api.html", tmp_path)


@needs_sphinx
@needs_chromium
def test_plots_render(site: pathlib.Path, tmp_path: pathlib.Path) -> None:
    dom = _dom(site, "performance.html", tmp_path)
    assert "Performance" in _headings(dom)
    images = re.findall(r'<img[^>]*\bsrc="([^"]+)"', dom)
    plots = [src for src in images if src.startswith("_images/")]
    # Every plot docs/PERFORMANCE.md shows, each a PNG that decodes.
    wanted = re.findall(r"!\[[^\]]*\]\(\.\./bench/results/([^)]+)\)",
                        (ROOT / "docs" / "PERFORMANCE.md").read_text())
    assert wanted and sorted(p.split("/")[-1] for p in plots) == sorted(wanted), (plots, wanted)
    for src in plots:
        width, height, pixels = _png(site / src)
        assert width > 100 and height > 100 and len(set(pixels[:100_000])) > 2, src
    shot = _screenshot(site, "performance.html#throughput", tmp_path)
    assert shot.stat().st_size > 0


def _screenshot(site: pathlib.Path, page: str, tmp_path: pathlib.Path) -> pathlib.Path:
    """A 1280x900 screenshot of a page, kept in build/docs/_screenshots/;
    it must be a PNG of that size with something drawn on it."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    name, _, anchor = page.partition("#")
    shot = SHOTS / (name.replace(".html", "") + (f"-{anchor}" if anchor else "") + ".png")
    shot.unlink(missing_ok=True)
    uri = (site / name).as_uri() + (f"#{anchor}" if anchor else "")
    result = _browser(tmp_path, "--window-size=1280,900", f"--screenshot={shot}", uri)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    width, height, pixels = _png(shot)
    assert (width, height) == (1280, 900)
    assert len(set(pixels)) > 16, "a blank screenshot"
    return shot
