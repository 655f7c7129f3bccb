# Two commands on a fresh machine (only python3.12 and make needed):
#   make run    install and serve all three functions locally, embedded stores
#   make test   install everything the tests need (incl. Directus 12 and 11), lint, type check, every test tier
SHELL := /bin/bash
# One Python everywhere: the functions' runtime (python312 in terraform/functions.tf), pyproject.toml, the
# lock, Cloud Build and this venv (tests/unit/test_python_version.py holds them together). A pyenv shim
# answers only when pyenv selects 3.12, so fall back to the newest installed pyenv 3.12.x.
PYTHON_VERSION := 3.12
ifeq ($(origin PYTHON),undefined)
PYTHON := $(or $(shell python$(PYTHON_VERSION) -c 'import sys; print(sys.executable)' 2>/dev/null),$(shell \
	PYENV_VERSION="$$(pyenv versions --bare 2>/dev/null | grep -E '^$(subst .,\.,$(PYTHON_VERSION))\.[0-9]+$$' | sort -V | tail -n 1)" \
	python$(PYTHON_VERSION) -c 'import sys; print(sys.executable)' 2>/dev/null),python$(PYTHON_VERSION))
endif
UV_VERSION := 0.13.8
TOOLS := $(CURDIR)/.cache/tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON := $(PYTHON)
export UV

.PHONY: install run test test-deps lint fmt unit directus iac requirements tf-check bundle bench clean python

# Fails early, naming what to install, instead of letting uv pick (or download) another Python.
python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "$(PYTHON_VERSION)".split("."))))' 2>/dev/null || { \
	  echo "make: Python $(PYTHON_VERSION) is required (the functions run python$(subst .,,$(PYTHON_VERSION))), but '$(PYTHON)' is missing or another version." >&2; \
	  echo "      Install Python $(PYTHON_VERSION) with venv (e.g. 'pyenv install $(PYTHON_VERSION)', or your system's python$(PYTHON_VERSION) package)," >&2; \
	  echo "      or point PYTHON at one: make PYTHON=/path/to/python$(PYTHON_VERSION) ..." >&2; \
	  exit 1; }

$(UV): | python
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

# The venv is rebuilt only when the lock changes.
$(VENV)/.installed: uv.lock pyproject.toml | python $(UV)
	$(UV) sync --frozen --all-extras
	touch $@
	@echo "make: the calsync command is $(BIN)/calsync"

install: $(VENV)/.installed

# `make run` installs only what the product needs at run time: the functions' dependencies and the oauth
# extra, no mypy, ruff, pytest or Node. Same .venv (one `calsync` to find, .venv/bin/calsync): --inexact
# keeps whatever `make install` put there, so neither target undoes the other; `make install` and
# `make test` still install everything (they sync exactly, adding the dev tools back).
$(VENV)/.installed-run: uv.lock pyproject.toml | python $(UV)
	$(UV) sync --frozen --no-dev --extra oauth --inexact
	touch $@
	@echo "make: the calsync command is $(BIN)/calsync"

run: $(VENV)/.installed-run
	$(BIN)/calsync serve

# Directus 12 and the latest Directus 11 (Node 24 from the .venv's wheel), each installed once into a cache
# outside the repo, named by its lock's hash.
directus: install
	bash scripts/install_directus.sh $(VENV) tests/parts/directus
	bash scripts/install_directus.sh $(VENV) tests/parts/directus11

# checkov cannot share an environment with pytest (packaging pins); it gets its own, from the same lock.
.cache/iac/.installed: uv.lock | python $(UV)
	$(UV) export --frozen --only-group iac --no-emit-project --no-hashes --no-header --format requirements-txt -o .cache/iac-requirements.txt
	$(UV) venv --quiet --allow-existing .cache/iac
	$(UV) pip install --quiet --python .cache/iac/bin/python -r .cache/iac-requirements.txt
	touch $@

iac: .cache/iac/.installed

test-deps: install directus iac

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: test-deps lint
	UV=$(UV) $(BIN)/python scripts/gen_requirements.py --check
	$(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit

requirements: install
	UV=$(UV) $(BIN)/python scripts/gen_requirements.py

tf-check: iac
	terraform fmt -check -recursive terraform
	.cache/iac/bin/checkov -d terraform --framework terraform --skip-download --compact --quiet

bundle: install
	$(BIN)/python scripts/bundle.py

# Benchmarks (issues 8, 14): a real Directus and the Google fake (30 ms per request); prints the README's
# performance table and writes bench/results.json (a few minutes). BENCH_ARGS passes options to bench/run.py,
# e.g. BENCH_ARGS="--only push_1000". Not part of `make test`; tests/integration/test_bench_smoke.py keeps it alive.
bench: install directus
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
