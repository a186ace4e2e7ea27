# The relay's two commands for users: `make demo` and `make test`. Everything else is for developers.
.PHONY: test demo bench fuzz chaos lint typecheck setup venv clean

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

# Fault runs (kills, broker restart, service outages, secret scan); writes RELIABILITY.md "Chaos".
# Scenarios 1 and 3 run a real kube-apiserver: setup builds it once (cached) when it is missing.
chaos:
	bash scripts/setup.sh
	$(VENV)/bin/python -m chaos

setup:
	bash scripts/setup.sh

lint:
	$(VENV)/bin/ruff check relay workers tests bench chaos
	$(VENV)/bin/ruff format --check relay workers tests bench chaos

typecheck:
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
