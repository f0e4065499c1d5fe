# Developer commands; .ci/run and the README use the same steps.
PY ?= .venv/bin/python

.PHONY: venv build debug release test test-debug bench lint docs clean soak-cross soak-topic wheel wheel-check sdist-check

venv:
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -e '.[test]'
	# What `make build` (setup.py build_ext --inplace, outside pip's isolated
	# build) needs: pyproject.toml's build requirements.
	$(PY) -m pip install -q 'setuptools>=77' wheel 'Cython>=3.0'

build:
	$(PY) setup.py build_ext --inplace

# -O0 -g with Cython line tracing, for gdb, valgrind and coverage.
debug:
	RINGSHM_DEBUG=1 RINGSHM_FORCE=1 $(PY) setup.py build_ext --inplace --force

# Back to the release build after a debug one.
release:
	RINGSHM_FORCE=1 $(PY) setup.py build_ext --inplace --force

test: build
	$(PY) -m pytest -q

# The whole suite once more against the debug build.
test-debug: debug
	$(PY) -m pytest -q
	$(MAKE) release

bench: build
	$(PY) bench/run.py

lint:
	$(PY) -m pip install -q -e '.[lint]'
	$(PY) -m ruff check ringshm tests bench examples setup.py docs/site
	PATH=$(dir $(PY)):$$PATH $(dir $(PY))cython-lint --max-line-length 100 ringshm/*.pyx ringshm/*.pxd ringshm/*.pxi
	$(PY) -m mypy --strict -p ringshm
	$(MAKE) -C libringshm lint BUILD=$(CURDIR)/build/libringshm-lint

# The documentation site (docs/site/, Sphinx), warnings as errors: build/docs/index.html.
docs:
	$(PY) -c 'import sphinx, furo, myst_parser' 2>/dev/null || $(PY) -m pip install -q -e '.[docs]'
	$(PY) -m sphinx -W --keep-going -b html docs/site build/docs

clean:
	rm -rf build dist wheelhouse *.egg-info ringshm/_ring.c ringshm/*.so ringshm/include ringshm/lib .pytest_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +

# The C/Python kill tests (tests/test_cross_faults.py) for SOAK seconds each.
SOAK ?= 300
soak-cross: build
	RINGSHM_SOAK_SECONDS=$(SOAK) $(PY) -m pytest -q -s tests/test_cross_faults.py

# ringshm stress --topic for SOAK seconds: 2 publishers, 3 tethered and 1
# untethered subscribers, a SIGKILL every 200 ms, a SIGSTOP of 500 ms every
# second (tethered ones untethered by a 0.25 s stall_timeout); docs/RELIABILITY.md.
soak-topic: build
	$(PY) -m ringshm stress --topic --publishers 2 --tethered 3 --untethered 1 \
	    --seconds $(SOAK) --kill-every 200 --stop-every 1000 --stop-for 500 --stall-timeout 0.25

# Wheels (docs/DESIGN.md, "Wheels and platforms"), for WHEEL_PY (any
# Python 3.9+, e.g. WHEEL_PY=~/.pyenv/versions/3.12.1/bin/python) into
# wheelhouse/: the sdist, and the wheel built from it, repaired by auditwheel.
WHEEL_PY ?= python3
WHEEL_ABI = cp$(shell $(WHEEL_PY) -c 'import sys; print("%d%d" % sys.version_info[:2])')
wheel:
	rm -f wheelhouse/ringshm-*-$(WHEEL_ABI)-*.whl
	.ci/build-wheel $(WHEEL_PY) wheelhouse

# The test suite against that wheel installed in a fresh venv, from a copy of
# tests/ alone, with no C compiler on PATH (tests needing one, or the
# checkout, skip with the reason; `-rs` lists them).
wheel-check: wheel
	.ci/wheel-check wheelhouse/ringshm-*-$(WHEEL_ABI)-*.whl $(WHEEL_PY) -rs tests

# The sdist unpacked, installed (compiled) in a fresh venv, smoke-tested.
sdist-check:
	.ci/sdist-check $(WHEEL_PY)
