# The relay's two commands for users: `make demo` and `make test`. Everything else is for developers.
.PHONY: test demo bench fuzz lint typecheck setup venv clean

VENV ?= .venv
PYTHON ?= python3

test:
	bash scripts/test.sh

demo:
	bash scripts/demo.sh

bench:
	bash scripts/bench.sh

fuzz:
	bash scripts/fuzz.sh

setup:
	bash scripts/setup.sh

lint:
	$(VENV)/bin/ruff check relay workers tests bench
	$(VENV)/bin/ruff format --check relay workers tests bench

typecheck:
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
