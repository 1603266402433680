# Everything a newcomer needs: `make demo` (install + run lth-train offline) and `make test` (install + tests).
# TORCH_SPEC pins the CPU wheel that CI machines carry on disk; elsewhere use e.g. `make test TORCH_SPEC=torch`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/lth-train
	$(BIN)/lth-report --offline wandb/latest-run --html report/report.html
	@echo "Open report/report.html in a browser: the figures, rounds and tickets of this run"

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check lth_wandb tests benchmarks

bench: install
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) outputs multirun wandb lightning_logs report
