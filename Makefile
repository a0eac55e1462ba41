# skolsynk: every target sets up what it needs on a fresh machine (virtualenv, dependencies,
# local RabbitMQ, the Mongo wire server).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

# pytest in a temporary directory of its own (unique per run, removed after a green run, kept and named
# after a failed one): two runs on one machine never share pytest's default /tmp/pytest-of-$USER.
# $(1): pytest options of the target; PYTEST_ARGS follows them.
define run_pytest
	@basetemp="$$(mktemp -d "$${TMPDIR:-/tmp}/skolsynk-pytest.XXXXXX")"; \
	$(BIN)/python -m pytest --basetemp="$$basetemp" $(1) $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 0 ]; then rm -rf "$$basetemp"; else echo "pytest's temporary files: $$basetemp"; fi; \
	exit $$status
endef

.PHONY: install demo test test-unit test-connected lint check-deploy format contracts contracts-check bench up down lock clean test-chaos

install: $(STAMP)

# Re-install when the dependencies change or a service (a new top-level package) appears.
$(STAMP): pyproject.toml requirements-dev.lock testing/pyproject.toml $(wildcard services/skolsynk_services/*/__init__.py)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e . -e testing
	@touch $(STAMP)

## The main job: the demo on the embedded defaults.
demo: install
	$(BIN)/python tools/demo.py

## Every test: unit, connected (real RabbitMQ + Mongo wire server) and end-to-end (service processes).
test: install
	$(call run_pytest,)

test-unit: install
	$(call run_pytest,-m unit)

## Fault and fuzz tests at scale (make test runs them small): docs/reliability.md.
test-chaos: export CHAOS_SCALE ?= 40
test-chaos: export SKOLSYNK_FUZZ_EXAMPLES ?= 500
test-chaos: install
	$(call run_pytest,-m "chaos or fuzz" -o timeout=1200)

test-connected: install
	$(call run_pytest,-m "connected or e2e")

lint: install
	$(BIN)/ruff check libs services testing tests tools
	$(BIN)/ruff format --check libs services testing tests tools
	$(BIN)/mypy
	$(BIN)/mypy services
	$(BIN)/lint-imports --no-cache
	$(BIN)/python tools/check_compose.py
	$(BIN)/python -m skolsynk.contracts check docs/contracts
	$(MAKE) --no-print-directory check-deploy

## Prometheus rules (promtool check + rule unit tests), the Grafana dashboards and the Kubernetes
## overlays (rendered offline and validated). promtool: Debian package `prometheus`.
check-deploy: install
	promtool check config --syntax-only deploy/prometheus/prometheus.yml
	promtool check rules deploy/prometheus/rules/*.yml
	promtool test rules deploy/prometheus/tests/*.yml
	$(BIN)/python tools/dashboards.py --check
	$(BIN)/python tools/k8s.py check

format: install
	$(BIN)/ruff check --fix libs services testing tests tools
	$(BIN)/ruff format libs services testing tests tools

## Export the message contracts as JSON Schema for vendors (CI fails when they are stale).
contracts: install
	$(BIN)/python -m skolsynk.contracts export docs/contracts

contracts-check: install
	$(BIN)/python -m skolsynk.contracts check docs/contracts

bench: install
	$(BIN)/python tools/bench.py

## Full stack in containers against a real MongoDB replica set (needs a Docker engine).
up:
	docker compose up --build -d

down:
	docker compose down

## Re-pin dependencies after editing pyproject.toml.
lock: install
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml -o requirements.lock --python-version 3.11 --quiet --generate-hashes
	$(BIN)/uv pip compile pyproject.toml --extra dev -o requirements-dev.lock --python-version 3.11 --quiet --generate-hashes

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo
