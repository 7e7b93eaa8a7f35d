# raregan: `make demo` and `make test` are all a newcomer types; both install first when needed.
PY       ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
PHANTOMS := runs/phantoms
DATA     ?= $(PHANTOMS)
CONFIG   ?= cpu-demo
CLASS    ?= Lung Lesion
FRACTION ?= 50
ARM      ?= none
MODEL    ?= densenet121
SEED     ?= 0
SYNTH    ?=
ARGS     ?=
SHARED   ?= ../shared/data
# the embedded phantoms are written on first use (and checked on every use) when DATA is left at its default
DATA_DEP := $(if $(filter $(PHANTOMS),$(DATA)),$(PHANTOMS)/CheXpert-v1.0-small/train.csv)

.PHONY: FORCE setup test lint demo phantoms data filters gan synth classify compare results bench clean

setup: $(STAMP)

# pip reads the pinned torch/torchvision from this machine's disk; the stamp makes setup idempotent.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Lung Lesion is 10 % of the phantoms (CheXpert's share is 4 %: too few test positives for a stable
# AUC). Always run: it returns at once when the same phantoms are there, and replaces older ones.
$(PHANTOMS)/CheXpert-v1.0-small/train.csv: FORCE | setup
	$(BIN)/raregan phantoms --out $(PHANTOMS) --n 2000 --size 128 --seed 0 --prevalence "Lung Lesion=0.1"

phantoms: $(PHANTOMS)/CheXpert-v1.0-small/train.csv

FORCE:

# The main job on the embedded phantoms, about 3 minutes on 2 cores (benchmarks/bench_demo.py): a GAN
# of Lung Lesion → synth → the small CNN (cnn5) without and with its images at 100 % → tables and
# report (compare prints its path). DenseNet-121 instead: ARGS="--model densenet121" (slower); the whole
# experiment (fractions, arms, seeds of a preset): make compare.
demo: setup $(PHANTOMS)/CheXpert-v1.0-small/train.csv
	$(BIN)/raregan compare --data $(PHANTOMS) --config $(CONFIG) --name demo --classes "Lung Lesion" \
	  --fractions 100 --arms none gan --seeds 0 --model cnn5 --set classify.epochs=15 --progress $(ARGS)

data: setup $(DATA_DEP)
	$(BIN)/raregan data --data $(DATA) --summary $(ARGS)

filters: setup $(DATA_DEP)
	$(BIN)/raregan filters --data $(DATA) --class "$(CLASS)" --fraction $(FRACTION) --out "runs/filters/$(CLASS)" $(ARGS)

gan: setup $(DATA_DEP)
	$(BIN)/raregan gan --data $(DATA) --class "$(CLASS)" --fraction $(if $(filter command line,$(origin FRACTION)),$(FRACTION),100) --config $(CONFIG) $(ARGS)

synth: setup
	$(BIN)/raregan synth --run $(RUN) $(ARGS)

classify: setup $(DATA_DEP)
	$(BIN)/raregan classify --data $(DATA) --fraction $(FRACTION) --arm $(ARM) --model $(MODEL) \
	  --train-seed $(SEED) --config $(CONFIG) $(if $(SYNTH),--synth $(SYNTH)) $(ARGS)

# Left at their defaults, DATA and CONFIG run the experiment on the phantoms with the demo preset:
# one line says so, since a user who passed only ARGS may have meant their own data.
PHANTOM_NOTE = make compare: on the demo phantoms ($(PHANTOMS)) with configs/$(CONFIG).yaml; for your \
  data: make compare DATA=/path/to/data CONFIG=cpu-results ARGS="--classes ..."
compare: setup $(DATA_DEP)
	$(if $(and $(filter file,$(origin DATA)),$(if $(findstring --data,$(ARGS)),,yes)),@echo '$(PHANTOM_NOTE)' >&2)
	$(BIN)/raregan compare --data $(DATA) --config $(CONFIG) --progress $(ARGS)

# The committed real-data results (docs/results/<name>/): each sweep's cell records (cells/), its
# tables, plots and self-contained report. `make results` only collects the committed records
# (minutes: the data is read to check every record's fingerprint, nothing trains); `make results
# CELLS=all` runs every cell without a record first (hours of CPU; resumable) and grows the records.
RESULTS_RUN = $(if $(filter all,$(CELLS)),,--collect)
results: setup
	$(BIN)/raregan compare --data $(SHARED)/chest_xray --rarefy viral=0.05 --classes viral \
	  --config cpu-results --name kermany-viral --results docs/results/kermany-viral-densenet121 \
	  $(RESULTS_RUN) $(ARGS)
	$(BIN)/raregan compare --data $(SHARED)/chest_xray --rarefy viral=0.05 --classes viral \
	  --set compare.condition_on=[bacterial] --fractions 100 --arms none gan --config cpu-results \
	  --name kermany-viral-cond --results docs/results/kermany-viral-conditional $(RESULTS_RUN) $(ARGS)
	$(BIN)/raregan compare --data $(SHARED)/knee_kl --classes 4 --fractions 100 \
	  --config cpu-results --name knee-kl4 --results docs/results/knee-kl4-densenet121 \
	  $(RESULTS_RUN) $(ARGS)
	$(BIN)/raregan compare --data $(SHARED)/chest_xray --rarefy viral=0.05 --classes viral \
	  --config cpu-utility --name utility --results docs/results/utility-kermany-viral \
	  $(RESULTS_RUN) $(ARGS)

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf runs .pytest_cache
