# Everything runs from a .venv inside the repo, created on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck unit bench clean exe exe-test lock lock-upgrade dist \
	release-dry-run

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(STAMP_RUN)

demo: $(STAMP_RUN)
	$(BIN)/mpexport demo

lint: $(STAMP_DEV)
	$(BIN)/ruff check .

typecheck: $(STAMP_DEV)
	$(BIN)/mypy --strict mpexport

unit: $(STAMP_DEV)
	$(BIN)/python -m pytest -q

test: lint typecheck unit

# The benchmark (scripts/bench.py; its docstring lists the scenarios). Arguments
# go through BENCH_ARGS, e.g. an A/B run against the commit before, pair by pair:
#   make bench BENCH_ARGS="--against HEAD~1 --only overhead,scale"
# (= .venv/bin/python scripts/bench.py --against HEAD~1 --only overhead,scale)
BENCH_ARGS ?=
bench: $(STAMP_DEV)
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

# The standalone executable (onedir and onefile) in dist/, built in a clean venv
# installed from the hashed lock packaging/requirements-exe.txt.
exe:
	bash packaging/build_exe.sh

# The executable's lock (scripts/lock_exe.py; uv is installed outside the repo):
# `make lock` after a change to pyproject.toml's dependencies or
# packaging/requirements-exe.in keeps every locked version it can; `make
# lock-upgrade` moves everything to the newest releases. Both then check that
# the lock installs, hash-checked, on Linux x86_64, Windows x64 and macOS arm64.
# LOCK_ARGS go to uv, e.g. make lock LOCK_ARGS="--upgrade-package urllib3".
LOCK_ARGS ?=
lock:
	$(PYTHON) scripts/lock_exe.py compile $(LOCK_ARGS)

lock-upgrade:
	$(PYTHON) scripts/lock_exe.py compile --upgrade $(LOCK_ARGS)

# The frozen test set against what is in dist/ (no rebuild).
exe-test: $(STAMP_DEV)
	bash packaging/run_frozen_tests.sh

# The sdist and the wheel in dist/, checked as the release workflow checks them
# before publishing: built from the sdist, `twine check --strict`, their
# contents, then installed into a new venv that runs `mpexport --version` and
# `mpexport demo` (scripts/dist.sh; build and twine live in a venv outside the repo).
dist:
	bash scripts/dist.sh

# What the release workflow builds on this platform, here: the version check,
# both executables from the hashed lock, the frozen test set against each, the
# sdist and wheel (make dist), their archives in dist/release/ and SHA256SUMS
# (packaging/release.py). Nothing is published. RELEASE_TAG is checked against
# the package's version (default: the tag the version calls for).
RELEASE_TAG ?= v$(shell $(PYTHON) packaging/release.py version)
release-dry-run: $(STAMP_DEV)
	$(PYTHON) packaging/release.py version --tag $(RELEASE_TAG)
	bash packaging/build_exe.sh
	bash packaging/run_frozen_tests.sh dist/mpexport/mpexport
	bash packaging/run_frozen_tests.sh dist/mpexport-onefile
	bash scripts/dist.sh
	rm -rf dist/release
	$(PYTHON) packaging/release.py archive --require onedir,onefile
	cp dist/mpexport-*.tar.gz dist/mpexport-*-py3-none-any.whl dist/release/
	$(PYTHON) packaging/release.py sums dist/release

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache demo.duckdb
