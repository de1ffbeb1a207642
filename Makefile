# Every target creates .venv if it is missing and installs the package with its extras,
# so that `make demo` and `make test` work on a fresh machine with only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo scale-out-demo test lint bench chaos clean bytecode

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,redis]'
	@# Ray is large and has wheels for fewer platforms: without it, its tests and the
	@# scale-out demo skip (saying so) instead of failing the whole set-up.
	$(BIN)/python -m pip install --quiet -e '.[ray]' \
		|| echo "aiotp: Ray could not be installed here; the Ray tests and scale-out demo skip"
	@touch $(STAMP)

# An editable install compiles nothing, and with PYTHONDONTWRITEBYTECODE=1 (as on the shared
# machines) nothing ever writes a .pyc: every worker process would compile aiotp afresh at
# start, several ms of its cold start. compileall writes them whatever that variable says, and
# only recompiles what changed since, so every target runs it. (A regular `pip install aiotp`
# compiles at install time already.)
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q aiotp

demo: bytecode
	$(BIN)/python examples/demo.py

# Two app instances sharing sessions on Redis and workers on Ray (needs redis-server; Ray comes
# with the [ray] extra that every target installs). Starts and stops its own servers, on loopback.
scale-out-demo: bytecode
	@bash scripts/ensure-redis-server
	$(BIN)/python examples/scale_out.py

test: bytecode
	@bash scripts/ensure-redis-server
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check aiotp tests examples benchmarks
	$(BIN)/mypy --strict aiotp

bench: bytecode
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f --quick || exit 1; done

chaos: bytecode
	AIOTP_CHAOS_LONG=1 $(BIN)/python -m pytest -q -o timeout=1200 tests/chaos tests/guarantees/test_pool_model.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
