# The single front door. Every target sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install system-deps lint audit test contract demo bench bench-sandbox bench-ordering reliability clean

# The service and, as a separate distribution, the Stripe sandbox (sandbox/) it is developed against.
$(STAMP): pyproject.toml sandbox/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' -e ./sandbox
	touch $(STAMP)

install: $(STAMP)

system-deps:
	bash scripts/system-deps

lint: install
	$(BIN)/ruff check src sandbox/src tests bench deploy/tools scripts
	$(BIN)/ruff format --check src sandbox/src tests bench deploy/tools scripts
	$(BIN)/mypy

# Known vulnerabilities in the installed dependencies. Exits 2 when it could not audit every
# dependency (no advisory database reachable), so it is not part of `make test`; run it where
# PyPI's JSON API or OSV is reachable (AUDIT_SERVICE=osv): docs/operations.md.
audit: install
	$(PY) scripts/audit.py --skip-editable

test: install system-deps lint
	$(BIN)/pytest

# The contract suite (tests/contract) against Stripe's test mode instead of the sandbox:
#   make contract STRIPE_TEST_KEY=sk_test_...
# Without a key it says how and runs nothing; a live key is refused. Needs the internet.
contract: install
	@if [ -z "$(STRIPE_TEST_KEY)" ]; then \
	  echo "make contract runs tests/contract against Stripe's test mode (make test runs it against the sandbox)."; \
	  echo "Give it a test-mode secret key:  make contract STRIPE_TEST_KEY=sk_test_..."; \
	  echo "No key given: nothing was run."; \
	  exit 0; \
	fi; \
	case "$(STRIPE_TEST_KEY)" in \
	  sk_test_*|rk_test_*) ;; \
	  *) echo "make contract: refusing STRIPE_TEST_KEY: only a test-mode key (sk_test_...), never a live one" >&2; exit 2;; \
	esac; \
	CONTRACT_TARGET=stripe STRIPE_TEST_KEY="$(STRIPE_TEST_KEY)" $(BIN)/pytest -p no:cacheprovider tests/contract

demo: install
	$(BIN)/basketball-api demo

bench: install
	$(PY) -m bench.refresh

bench-sandbox: install
	$(PY) -m bench.sandbox_throughput

# Sixty orders at once while Stripe answers in 15 s (SQLite and PostgreSQL).
bench-ordering: install
	$(PY) -m bench.slow_stripe

# Heavier runs than `make test` (docs/reliability.md): 10,000 webhooks to two replicas,
# 2,000 refreshes under faults, sustained load. Each prints a table and writes bench/out/.
reliability: install system-deps
	$(PY) -m bench.exactly_once
	$(PY) -m bench.soak
	$(PY) -m bench.load

clean:
	rm -rf $(VENV) var bench/out .pytest_cache .mypy_cache .ruff_cache
