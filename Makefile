# One place for the project's commands; the README names `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test check lint typecheck unit bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Run the gateway on the embedded default: SQLite under ./var, SMTP on 127.0.0.1:2525,
# outgoing mail written to ./var/outgoing/ because the example config has no relay.
run: setup
	test -f gateway.toml || cp data/gateway.example.toml gateway.toml
	$(BIN)/gateway contacts check
	$(BIN)/gateway serve

# Everything CI runs: system packages the tests need, lint, types, the whole suite.
test: setup
	bash .ci/install-dovecot
	bash .ci/install-postfix
	bash .ci/install-chromium
	$(BIN)/ruff check gateway tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy gateway
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy gateway

unit: setup
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python bench/smtp_throughput.py

clean:
	rm -rf $(VENV) var build *.egg-info
