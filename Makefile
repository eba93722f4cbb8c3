# Two commands do all the set-up on a fresh machine with Python >= 3.11:
#   make run    creates .venv, installs mtdiff, runs the default Snakemake workflow
#   make test   creates .venv if missing, installs, runs the whole test suite (incl. the
#               workflow end to end, `snakemake --report`, `snakemake --lint` and snakefmt)
# torch is installed first, pinned (TORCH_PIN): pyproject.toml caps torch at 2.14.1, and an
# unpinned request could pull a newer multi-GB CUDA build. GPU users: install the CUDA build
# of torch you need into .venv first (or set TORCH_PIN), then `make install`.
# Nothing here activates the venv: .venv/bin/snakemake runs every job with .venv's python.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
CORES ?= all
PYTEST_ARGS ?=

.PHONY: run test install clean-results dry-run report lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e '.[test,slurm]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/snakemake --cores $(CORES)

dry-run: install
	$(BIN)/snakemake --cores $(CORES) -n

report: install
	$(BIN)/snakemake --report results/report.zip

lint: install
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean-results:
	rm -rf results/* .snakemake
