# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint contracts docs clean help bench

help:
	@echo "make run        start the embedded stack and the four services (Ctrl-C stops all)"
	@echo "make test       lint, contract drift check, docs build and the whole test suite"
	@echo "make contracts  regenerate contracts/schemas, asyncapi.yaml, openapi/ and the generated docs pages"
	@echo "make docs       build the docs site (docs/, mkdocs.yml) into site/"

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m crmtools.devstack run

lint: $(STAMP)
	$(VENV)/bin/ruff check services contracts tests bench clients/python
	$(VENV)/bin/ruff format --check services contracts tests bench clients/python
	$(VENV)/bin/mypy services contracts bench clients/python

test: lint
	$(PY) -m contracts.generate --check
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

contracts: $(STAMP)
	$(PY) -m contracts.generate

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
