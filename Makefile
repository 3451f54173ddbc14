# One command sets up and runs each job; the virtualenv is made on first use and reused after.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= runs/cnn_mnist

.PHONY: install train test lint clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

train: $(STAMP)
	$(PY) -m launch.train --config=configs/cnn_mnist.py --workdir=$(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m flake8 research launch configs tests

clean:
	rm -rf $(VENV) build *.egg-info
