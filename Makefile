# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-all install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/dlbc-ray demo

# CI's path: everything but the tests marked slow (multi-node cluster, plugin install), under 15 minutes.
test: install-dev
	$(BIN)/python -m pytest -m "not slow"

test-all: install-dev
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/round_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
