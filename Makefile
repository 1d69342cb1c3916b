# Two commands do all set-up on a fresh machine:  make repro  (the embedded default pipeline)  and  make test.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test check lab kernel plots browser-check

setup: $(VENV)/.installed

# Re-install only when the dependency list changes.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# The embedded default, end to end: data -> train -> prune -> analyses -> report (see dvc.yaml).
repro: setup
	dvc repro

# Unit tests of lib/, the stage contract, and every notebook with its smoke defaults under nbval (in order).
test: setup
	python -m pytest tests notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:randomly

# The fast tier, for the edit loop: every test not marked slow, no notebooks under nbval (docs/testing.md).
check: setup
	python -m pytest tests -m "not slow" -p no:randomly -q

# JupyterLab with the project's environment as the kernel, serving notebooks/. Each NN_*.ipynb is paired with its
# jupytext twin NN_*.py (notebooks/jupytext.toml): a save writes both, and DVC tracks only the twins. The server's
# --config keeps outputs and volatile metadata out of the saved .ipynb, so git sees only real edits
# (docs/jupyterlab.md). As root (containers) Jupyter refuses to start without --allow-root.
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)
lab: setup kernel
	jupyter lab $(LAB_FLAGS) --config=$(CURDIR)/jupyter_server_config.py notebooks

# A real browser saves in JupyterLab (scripts/browser_check.py; not part of `make test`, docs/jupyterlab.md).
# Needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver).
browser-check: setup
	python -m pip install --quiet -e '.[browser]'
	python scripts/browser_check.py

kernel: setup
	python -m ipykernel install --user --name pruning-beyond-accuracy --display-name "Python (pruning-beyond-accuracy)"

# dvc plots show, rendered offline (Vega inlined from the vl-convert-python package): dvc_plots/index.html
plots: setup
	python -m lib.vega show
