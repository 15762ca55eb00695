# certex — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 8000
CERTEX_TEST_PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
export CERTEX_TEST_PG_URL

.PHONY: install run test test-sqlite test-postgres check lint typecheck clean bench bench-full federation

# setup.py builds the optional C accelerators: a change to them reinstalls too.
$(STAMP): pyproject.toml setup.py exchange/ledger/audit/_native.c exchange/ledger/_batch.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make run: a dev node on SQLite under ./var with demo data, on http://$(HOST):$(PORT)
run: install
	CERTEX_DEV=1 CERTEX_BASE_URL=http://$(HOST):$(PORT) $(BIN)/certex init
	@CERTEX_DEV=1 CERTEX_BASE_URL=http://$(HOST):$(PORT) $(BIN)/certex walkthrough
	CERTEX_DEV=1 CERTEX_BASE_URL=http://$(HOST):$(PORT) $(BIN)/certex serve --host $(HOST) --port $(PORT)

## make test: the whole suite on SQLite, then again on PostgreSQL
test: install test-sqlite test-postgres

test-sqlite: install
	CERTEX_TEST_DB=sqlite $(BIN)/python -m pytest

test-postgres: install
	CERTEX_TEST_DB=postgres $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

## make check: ruff + mypy --strict + the tests
check: lint typecheck test

## make federation: three province nodes on loopback with the cross-province walk-through
federation: install
	$(BIN)/certex dev federation

## make bench: the quick benchmark (≤ 3 minutes); make bench-full: the long one
bench: install
	$(BIN)/python -m bench --quick

bench-full: install
	$(BIN)/python -m bench --full

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis build \
	  exchange/ledger/audit/_native*.so exchange/ledger/_batch*.so
