PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint demo deps docs bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

deps:
	@scripts/install-debian-deps

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict rollbackd
	$(BIN)/lint-imports

test: $(STAMP) deps lint
	$(BIN)/pytest

soak: $(STAMP)
	ROLLBACKD_SOAK_EXAMPLES=50000 $(BIN)/pytest -p no:cacheprovider -s tests/properties

demo: $(STAMP) deps
	$(BIN)/rollbackd demo

bench: $(STAMP) deps
	$(BIN)/python benchmarks/run_all.py

docs: $(STAMP)
	$(BIN)/python -c "from rollbackd.errors import error_table_markdown as t; print(t(), end='')" \
		> docs/error-codes.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
