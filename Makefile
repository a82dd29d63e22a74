# Two entry points, each setting itself up on a fresh machine:
#   make study   the full RaCT study on the default data set (snakemake --cores 4)
#   make test    the test suite
# The venv takes torch 2.13.0 first (TORCH=... to choose another build), so that the project's
# torch range installs nothing more.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
CORES ?= 4

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet "$(TORCH)"
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $@

.PHONY: setup study test
setup: $(VENV)/.installed

study: setup
	$(VENV)/bin/snakemake --cores $(CORES)

test: setup
	$(VENV)/bin/python -m pytest -q
