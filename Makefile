# Build Swarm developer entry points. Everything runs from a local venv.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The console's browser libraries from npm (package-lock.json), copied into vendor/.
CONSOLE_STAMP := console/vendor/.built-stamp
XTERM := console/node_modules/@xterm
# The conformance drone's gRPC libraries from npm (tests/conformance/package-lock.json).
CONFORMANCE_STAMP := tests/conformance/node_modules/.installed-stamp
PYTEST_ARGS ?=
# `make test` runs four test modules side by side (pytest-xdist; a module stays
# on one worker, so its shared fixtures start once): the real-process tests
# mostly wait on processes and timers, so two cores serve four at once, about
# 4.5 min instead of 12 (six at once was slower: 5 min 12 s). Modules are handed
# out slowest first (tests/conftest.py SLOWEST_FIRST), not by their number of
# tests. `make test TEST_JOBS=0` runs them one after another.
TEST_JOBS ?= 4
# `make dist DIST_ARGS=--allow-dirty` for a development tarball of an uncommitted tree.
DIST_ARGS ?=

.PHONY: help venv console conformance openrc demo test test-fast lint format typecheck check proto bench dist clean

help:
	@echo "make demo       run a local swarm: a controller and three drones"
	@echo "make test       run the test suite"
	@echo "make test-fast  the in-process tests only (about 30 s)"
	@echo "make check      lint, type-check and test (what CI runs)"
	@echo "make console    fetch the console's browser libraries and its type checker (npm ci) into console/"
	@echo "make conformance  fetch the JavaScript conformance drone's libraries (npm ci); make test does it"
	@echo "make dist       release tarball dist/build-swarm-VERSION.tar.gz and the overlay's Manifest"
	@echo "make openrc     fetch Debian's OpenRC packages into .cache/openrc/ (the init script tests run them)"
	@echo "make proto      regenerate swarm.v1 from protos/"
	@echo "make bench      run the fleet benchmark (prints figures)"
	@echo "make format     reformat the code"

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP)

$(CONSOLE_STAMP): console/package.json console/package-lock.json
	cd console && npm ci --no-audit --no-fund --loglevel=error
	rm -rf console/vendor && mkdir -p console/vendor
	cp $(XTERM)/xterm/lib/xterm.mjs $(XTERM)/xterm/css/xterm.css $(XTERM)/addon-fit/lib/addon-fit.mjs console/vendor/
	cp $(XTERM)/xterm/LICENSE console/vendor/xterm.LICENSE
	cp $(XTERM)/addon-fit/LICENSE console/vendor/addon-fit.LICENSE
	touch $@

console: $(CONSOLE_STAMP)

$(CONFORMANCE_STAMP): tests/conformance/package.json tests/conformance/package-lock.json
	cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error
	touch $@

conformance: $(CONFORMANCE_STAMP)

# Debian's OpenRC, unpacked by tests/support/openrc.py into a private namespace
# (never installed on this machine). apt-get download needs a Debian host.
OPENRC_DEBS := .cache/openrc
openrc:
	mkdir -p $(OPENRC_DEBS)
	cd $(OPENRC_DEBS) && apt-get download openrc libeinfo1 librc1

demo: $(STAMP) $(CONSOLE_STAMP)
	$(BIN)/python tools/demo.py

test: $(STAMP) $(CONSOLE_STAMP) $(CONFORMANCE_STAMP)
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The in-process tests only (tests/conftest.py says which): seconds, for every edit.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not real" $(PYTEST_ARGS)

# The console's JavaScript too: TypeScript's checker on the JSDoc types
# (console/tsconfig.json), from npm like xterm.js (a devDependency).
lint: $(STAMP) $(CONSOLE_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	console/node_modules/.bin/tsc -p console

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/python tools/typecheck.py

check: lint typecheck test

proto: $(STAMP)
	$(BIN)/python tools/genproto.py

# The release tarball (git's files plus console/vendor/), then the thin Manifest
# of app-admin/build-swarm for it (see packaging/README.md).
dist: $(STAMP) $(CONSOLE_STAMP)
	tarball=$$($(BIN)/python tools/dist.py --outdir dist $(DIST_ARGS)) && $(BIN)/python tools/manifest.py "$$tarball"

bench: $(STAMP)
	$(BIN)/python bench/fleet.py

clean:
	rm -rf $(VENV) dist .typecheck .mypy_cache .ruff_cache .pytest_cache *.egg-info console/node_modules console/vendor tests/conformance/node_modules
