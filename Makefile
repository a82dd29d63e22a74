# Two entry points, each setting itself up on a fresh machine:
#   make study   the full RaCT study on the default data set (snakemake --cores 4)
#   make test    the quick tests, offline (the ones not marked slow)
# and, for CI and before a merge:
#   make test-all   make test, then make test-slow: the ml-100k study run by the workflow, the
#                   CLI and a deployed module, kill-and-resume, the browser report, lint
# and, as root on Debian 12 (it installs and starts SLURM, MUNGE and MariaDB):
#   make cluster-test   the workflow submitted to a one-node SLURM cluster started here
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

$(VENV)/.slurm-installed: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -e ".[test,slurm]"
	touch $@

.PHONY: setup study test test-slow test-all cluster-test
setup: $(VENV)/.installed

study: setup
	$(VENV)/bin/snakemake --cores $(CORES)

test: setup
	$(VENV)/bin/python -m pytest -q -m "not slow"

test-slow: setup
	$(VENV)/bin/python -m pytest -q -m slow

# each test once: the slow ones are exactly those `make test` leaves out
test-all: test test-slow

# The cluster is torn down however the test ends; sacct then lists the jobs the test submitted.
cluster-test: $(VENV)/.slurm-installed
	trap './tests/cluster/slurm.sh down' EXIT; \
	./tests/cluster/slurm.sh up --yes || exit 1; \
	start=$$(date +%FT%T); \
	RACT_CLUSTER_TEST=1 $(VENV)/bin/python -m pytest -q -rs -m cluster tests/test_cluster.py; \
	status=$$?; \
	sacct -X -S $$start -o JobID,Comment%60,State,ExitCode,Elapsed,AllocCPUS,ReqMem; \
	exit $$status
