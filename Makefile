# One entry point for every check. `make demo` and `make test` do all the set-up themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
ANVIL_VERSION := 1.7.1
ANVIL_DIR := .tools/anvil
ANVIL  := $(ANVIL_DIR)/node_modules/.bin/anvil
# A second EVM chain for the tests: Hardhat's network (Hardhat 2: it runs on Node 20, Hardhat 3
# needs Node 22). Its config must sit beside its node_modules, so it is copied there.
HARDHAT_VERSION := 2.29.1
HARDHAT_DIR := .tools/hardhat
HARDHAT := $(HARDHAT_DIR)/node_modules/.bin/hardhat
HARDHAT_CONFIG := $(HARDHAT_DIR)/hardhat.config.js
TORCH  := torch==2.13.0

.PHONY: help setup setup-dev demo text-demo test test-long lint bench gas clean

help:
	@echo "make demo       set up (.venv, torch CPU, allmende, Anvil) and run the main job"
	@echo "make text-demo  a byte-gpt job over 4 trainers on shards of Python's stdlib"
	@echo "make test       set up with dev tools and run the whole test suite"
	@echo "make test-long  the soak and long-running variants"
	@echo "make lint       ruff and mypy"
	@echo "make bench      benchmarks against plain PyTorch and Flower (slow)"
	@echo "make clean      remove the virtual environment, Anvil, Hardhat and caches"

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PIP) install --quiet -e '.[dev]'
	touch $@

$(ANVIL):
	mkdir -p $(ANVIL_DIR)
	cd $(ANVIL_DIR) && npm install --no-audit --no-fund --no-save --loglevel=error \
		@foundry-rs/anvil@$(ANVIL_VERSION)
	$(ANVIL) --version

$(HARDHAT):
	mkdir -p $(HARDHAT_DIR)
	cd $(HARDHAT_DIR) && npm install --no-audit --no-fund --no-save --loglevel=error \
		hardhat@$(HARDHAT_VERSION)
	cd $(HARDHAT_DIR) && HARDHAT_DISABLE_TELEMETRY_PROMPT=true node_modules/.bin/hardhat --version

$(HARDHAT_CONFIG): chains/hardhat/hardhat.config.js $(HARDHAT)
	cp chains/hardhat/hardhat.config.js $@

setup: $(VENV)/.installed $(ANVIL)

setup-dev: $(VENV)/.installed-dev $(ANVIL) $(HARDHAT) $(HARDHAT_CONFIG)

demo: setup
	$(PY) examples/federated_demo.py

text-demo: setup
	$(PY) examples/text_demo.py

test: setup-dev
	$(PY) -m pytest -m "not long" tests

test-long: setup-dev
	$(PY) -m pytest -m long tests

lint: setup-dev
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/mypy

gas: setup-dev
	$(PY) benchmarks/gas.py

bench: setup-dev
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .tools .cache .pytest_cache .mypy_cache .ruff_cache
