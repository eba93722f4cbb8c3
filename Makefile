# Two commands do all the set-up on a fresh machine with Python >= 3.11:
#   make run    creates .venv, installs mtdiff, runs the default Snakemake workflow
#   make test   creates .venv if missing, installs, runs the whole test suite
# torch is installed first, pinned: on the reference machines torch==2.14.1 and
# torchvision==0.29.1 come from local disk; a looser request could download a newer CUDA build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
CORES ?= all
PYTEST_ARGS ?=

.PHONY: run test install clean-results dry-run

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e '.[test,slurm]'
	touch $@

install: $(VENV)/.installed

run: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES)

dry-run: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) -n

test: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

clean-results:
	rm -rf results/* .snakemake
