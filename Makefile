# raregan: `make demo` and `make test` are all a newcomer types; both install first when needed.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DATA    ?= ../shared/data/chest_xray
CONFIG  ?= configs/cpu-demo.yaml
CLASS   ?= Fracture
FRACTION ?= 50
ARM     ?= none
MODEL   ?= densenet121
SEED    ?= 0

.PHONY: setup test lint demo phantoms data filters bench clean

setup: $(STAMP)

# torch/torchvision pins are read from this machine's disk by pip; the stamp makes setup idempotent.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

phantoms: setup
	$(BIN)/raregan phantoms --out runs/phantoms --n 2000 --size 128 --seed 0

data: setup
	$(BIN)/raregan data --data $(DATA) --summary

filters: setup
	$(BIN)/raregan filters --data $(DATA) --class $(CLASS) --out runs/filters/$(CLASS)

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache
