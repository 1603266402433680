# Everything a newcomer needs: `make demo` (install + run lth-train offline) and `make test` (install + tests).
# `make docs` builds the docs site into site/.
# TORCH_SPEC pins the CPU wheel that CI machines carry on disk; elsewhere use e.g. `make test TORCH_SPEC=torch`.
# `make test-oldest` runs the version-sensitive tests again in a second venv with the oldest releases we admit.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

# The oldest releases pyproject.toml admits of the dependencies whose behaviour changes between releases (Lightning
# 2.6 changed ModelCheckpoint's save_last). They MUST equal pyproject's floors ("wandb>=0.31" -> wandb==0.31);
# test-oldest checks that before installing.
OLDEST_PINS = pytorch-lightning==2.5.3 hydra-core==1.3.2 wandb==0.31
# The tests that depend on them: checkpoints and resume (Lightning), W&B run files and artifacts (wandb), lth-train
# (Hydra). One file per entry; add new resume or W&B test files here.
OLDEST_TESTS = tests/test_tracking.py tests/test_artifacts.py tests/test_train.py tests/test_resume_ddp.py tests/test_resume.py \
	tests/test_online.py tests/test_ddp.py tests/test_slurm.py::test_multi_node_ddp_recipe_under_srun_resumes_after_a_kill
OLDEST_VENV ?= .venv-oldest
OLDEST_STAMP = $(OLDEST_VENV)/.installed

.PHONY: install demo test test-oldest lint bench dist docs clean

# setuptools notes that an editable install of a package mapped from two folders (lth_wandb/, conf/) is served by
# an import finder: information, not a problem, printed by pip as a warning banner; it is the only one filtered.
QUIET_EDITABLE = PYTHONWARNINGS="ignore:Editable installation:UserWarning"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(QUIET_EDITABLE) $(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

$(OLDEST_STAMP): pyproject.toml Makefile
	@for pin in $(OLDEST_PINS); do \
	  grep -q "\"$${pin%%==*}>=$${pin#*==}[\",<]" pyproject.toml \
	    || { echo "Makefile: OLDEST_PINS has $$pin, but that is not a floor in pyproject.toml; make them match." >&2; exit 2; }; \
	done
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	$(QUIET_EDITABLE) $(OLDEST_VENV)/bin/python -m pip install --quiet -e ".[dev]" $(OLDEST_PINS)
	touch $(OLDEST_STAMP)

demo: install
	$(BIN)/lth-train
	$(BIN)/lth-report --offline wandb/latest-run --html report/report.html
	@echo "Open report/report.html in a browser: the figures, rounds and tickets of this run"
	@echo "Then: source $(VENV)/bin/activate, to have lth-train, lth-report, lth-sweep and wandb on your PATH"

test: install
	$(BIN)/python -m pytest -q

# Slow tests included: resume and DDP are the ones most likely to differ between Lightning releases.
test-oldest: $(OLDEST_STAMP)
	$(OLDEST_VENV)/bin/python -m pytest -q -m "not slow or slow" $(OLDEST_TESTS)

lint: install
	$(BIN)/ruff check lth_wandb tests benchmarks

bench: install
	$(BIN)/python benchmarks/overhead.py

# A wheel and an sdist in dist/, as they would be published: built in an isolated environment (python -m build),
# with no warning from the build (PYTHONDONTWRITEBYTECODE only makes setuptools say it skips byte-compiling), and
# checked by twine (metadata, README rendering). tests/test_packaging.py checks the same without isolation.
dist: install
	rm -rf dist && mkdir dist
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m build --outdir dist . > dist/build.log 2>&1 \
	  || { cat dist/build.log; exit 1; }
	@if grep -i "warn" dist/build.log; then echo "make dist: the build warned (above; the log: dist/build.log)" >&2; exit 1; fi
	$(BIN)/twine check --strict dist/*.whl dist/*.tar.gz

# The docs site (mkdocs.yml, docs/): the docs extra installed into the venv, then a strict build into site/, which fails
# on any broken link, page missing from the navigation or API name that does not resolve. NO_MKDOCS_2_WARNING: the
# Material theme's banner about its end of life, printed on every build.
DOCS_STAMP = $(VENV)/.installed-docs

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(QUIET_EDITABLE) $(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

clean:
	rm -rf $(VENV) $(OLDEST_VENV) outputs multirun wandb lightning_logs report dist site
