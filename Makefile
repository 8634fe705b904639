# Every target creates .venv when needed. torch is pinned and installed first so that pip never
# pulls a newer (CUDA) build; the project is then installed in editable mode.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA ?= $(abspath ../shared/data)
export LIFELONG_SHARED_DATA ?= $(SHARED_DATA)

.PHONY: demo test bench lint format clean mutate

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/lifelong demo

test: $(VENV)/.installed
	$(BIN)/pytest -q

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/gem_setting.py

# Mutation testing (not part of CI; TESTING.md has the last results): mutmut over metrics.py,
# evaluate.py and train.py (mutants are run from mutants/src), then the hand-written mutations of
# strategies/ in tools/mutate.py. `-` keeps going when mutmut reports survivors.
mutate: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev,mutate]'
	-PYTHONPATH=src OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results
	$(BIN)/python tools/mutate.py

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache mutants
