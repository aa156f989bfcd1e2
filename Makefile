# Two commands: `make demo` and `make test`. Both create .venv on first use.
# torch is installed first, pinned to the CPU build, so nothing pulls CUDA packages.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.selfseg-installed
TORCH  := torch==2.13.0

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test,ray]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/selfseg segment examples/images --out results

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) results .pytest_cache
