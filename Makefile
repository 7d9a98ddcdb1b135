# Two commands matter: `make train` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install train test test-cluster lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

train: $(STAMP)  ## train the default model (digits, small CNN); extra Hydra overrides via ARGS="..."
	$(BIN)/python train.py $(ARGS)

test: $(STAMP)  ## the suite (its duration: docs/results.md)
	$(BIN)/python -m pytest $(ARGS)

test-cluster: $(STAMP)  ## multi-node runs (torchrun nodes, SLURM jobs on a local two-node cluster: root), launchers, Optuna studies, heavy end-to-end runs
	$(BIN)/python -m pytest -m "slurm or multinode or launchers or sweeps or heavy" $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: $(STAMP)  ## the main benchmarks in bench/ (what each takes: docs/results.md)
	$(BIN)/python bench/trainer_overhead.py
	$(BIN)/python bench/export_overhead.py
	$(BIN)/python bench/compression.py
	$(BIN)/python bench/distill_study.py --seeds 5
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/sweeps.py

clean:
	rm -rf logs/ .pytest_cache/ .ruff_cache/
