# Two commands set up a fresh machine from nothing:
#   make demo   -- create .venv, install pot_nb (pinned by constraints.txt), run the main job
#   make test   -- same environment, then nbdev_test and pytest
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pot_nb-installed
DEMO_OUT ?= demo_out

.PHONY: demo test install fmnist export clean-nbs check-export readme hooks help

help:
	@echo "make demo   - install into $(VENV) and run the main job on the built-in data"
	@echo "make test   - install into $(VENV), then nbdev_test and pytest tests/"

$(STAMP): settings.ini setup.py constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# (the grep drops pip's notes about local index folders that this machine's pip configuration names)
	set -o pipefail; $(BIN)/python -m pip install --quiet --progress-bar off -c constraints.txt -e ".[dev]" 2>&1 \
	  | { grep -v "^WARNING: Location 'file:" || true; }
	@# the quokka photo and its outline for nbs/17 (only the wheel's files are used: imgaug does not import on NumPy 2)
	set -o pipefail; $(BIN)/python -m pip install --quiet --progress-bar off --no-deps -c constraints.txt imgaug==0.4.0 2>&1 \
	  | { grep -v "^WARNING: Location 'file:" || true; }
	@touch $(STAMP)

install: $(STAMP)

fmnist:
	@bash scripts/ensure_fmnist.sh

demo: install fmnist
	$(BIN)/pot_demo --out $(DEMO_OUT)

test: install fmnist
	# compile the CPU k-means kernel once (numba caches it next to the module) before notebooks run side by side
	$(BIN)/python -c "import torch; import pot_nb.kmeans_cpu; from pot_nb.cluster import batched_kmeans as km; [km(torch.randn(2, 9, 4, dtype=t), None, 2) for t in (torch.float32, torch.float64)]"
	# two notebooks at a time, one thread each: PyTorch threads fighting over 2 cores run many times slower
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing
	$(BIN)/python -m pytest tests/ -q -p no:cacheprovider

export: install
	$(BIN)/nbdev_export

clean-nbs: install
	$(BIN)/nbdev_clean

# Jupyter saves notebooks through nbdev_clean (no kernelspec/language_info/execution-count diffs after opening one)
hooks: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/nbdev_install_hooks

# notebooks and pot_nb/ must agree: export, then nothing may differ from git
check-export: install
	$(BIN)/nbdev_export && git diff --exit-code -- pot_nb

# README.md from nbs/index.ipynb (nbdev_readme needs Quarto; without it, scripts/readme.py renders the same cells)
readme: install
	@if command -v quarto >/dev/null 2>&1; then $(BIN)/nbdev_readme; else $(BIN)/python scripts/readme.py; fi
