# The single front door. Every target sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements

.PHONY: install system-deps lint audit test contract image demo bench bench-sandbox bench-ordering reliability lock clean

# Every install comes from the lock files in requirements/ (pip-tools, every package pinned
# with its hashes; `make lock` regenerates them), then the two distributions of this
# repository without their dependencies: the service and, as a separate distribution, the
# Stripe sandbox (sandbox/) it is developed and demonstrated against.
#   install (make test, CI): requirements/dev.txt    demo: requirements/demo.txt only
#   bench, reliability: requirements/bench.txt (dev + the bench extra)
$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	touch $@

define install_locked
	$(PY) -m pip install -q --require-hashes -r $(LOCK)/$(1).txt -r $(LOCK)/build.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . -e ./sandbox
	@$(PY) -m pip check >/dev/null || { $(PY) -m pip check; \
	  echo "$(LOCK)/$(1).txt lacks a dependency of a pyproject.toml: run make lock" >&2; exit 1; }
endef

$(STAMP): $(VENV)/.created $(LOCK)/dev.txt $(LOCK)/build.txt pyproject.toml sandbox/pyproject.toml
	$(call install_locked,dev)
	touch $@

$(VENV)/.demo-installed: $(VENV)/.created $(LOCK)/demo.txt $(LOCK)/build.txt pyproject.toml sandbox/pyproject.toml
	$(call install_locked,demo)
	touch $@

$(VENV)/.bench-installed: $(VENV)/.created $(LOCK)/bench.txt $(LOCK)/build.txt pyproject.toml sandbox/pyproject.toml
	$(call install_locked,bench)
	touch $@

install: $(STAMP)

# Regenerate requirements/*.txt after changing dependencies in a pyproject.toml.
lock: $(VENV)/.created
	PY=$(PY) bash scripts/lock

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
	$(PY) scripts/audit.py --disable-pip -r $(LOCK)/bench.txt -r $(LOCK)/build.txt

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

# Build deploy/Dockerfile with buildah from a debootstrapped base and run the image as the
# Deployment does (read-only root, uid 10001, no capabilities, SIGTERM). Needs root; CI runs it.
image: install system-deps
	bash scripts/image-ci

demo: $(VENV)/.demo-installed
	$(BIN)/basketball-api demo

bench: $(VENV)/.bench-installed
	$(PY) -m bench.refresh

bench-sandbox: $(VENV)/.bench-installed
	$(PY) -m bench.sandbox_throughput

# Sixty orders at once while Stripe answers in 15 s (SQLite and PostgreSQL).
bench-ordering: install
	$(PY) -m bench.slow_stripe

# Heavier runs than `make test` (docs/reliability.md): 10,000 webhooks to two replicas,
# 2,000 refreshes under faults, sustained load. Each prints a table and writes bench/out/.
reliability: $(VENV)/.bench-installed system-deps
	$(PY) -m bench.exactly_once
	$(PY) -m bench.soak
	$(PY) -m bench.load

clean:
	rm -rf $(VENV) var bench/out .pytest_cache .mypy_cache .ruff_cache
