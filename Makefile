# Every target creates .venv if it is missing and installs the package with its extras,
# so that `make demo` and `make test` work on a fresh machine with only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench chaos clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check aiotp tests examples benchmarks
	$(BIN)/mypy --strict aiotp

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f --quick || exit 1; done

chaos: $(STAMP)
	AIOTP_CHAOS_LONG=1 $(BIN)/python -m pytest -q -o timeout=1200 tests/chaos tests/guarantees/test_pool_model.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
