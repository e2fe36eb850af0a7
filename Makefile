# Two commands for a newcomer: `make run` (the pipeline on the offline demo data)
# and `make test`. Both create .venv when missing and install the pinned set.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# A machine without an NVIDIA driver gets PyTorch's CPU build (never the CUDA wheels):
# from pip's own find-links when a CPU wheel is there, else from PyTorch's CPU index.
ifeq ($(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu),gpu)
TORCH := torch==2.13.0
TORCH_INDEX :=
else
TORCH := torch==2.13.0+cpu
TORCH_INDEX = $(shell $(PYTHON) -m pip install --dry-run --no-deps --no-index --ignore-installed --quiet \
	"$(TORCH)" >/dev/null 2>&1 || echo --extra-index-url https://download.pytorch.org/whl/cpu)
endif

.PHONY: setup run test test-unit lint lock mutate clean gpu-wheels gpu-data

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --no-deps "$(TORCH)" $(TORCH_INDEX)
	$(PIP) install --quiet -c requirements/constraints.txt -e ".[dev]"
	touch $@

run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro
	$(BIN)/colorization curves   # reports/curves/index.html: the training curves, readable offline

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" pytest

# The unit tests alone (tests/unit: in-process, no servers, child processes or GPUs): about two
# minutes on 2 cores; `make test` runs them and tests/integration.
test-unit: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" pytest tests/unit

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Re-resolve the dependency set (after changing pyproject.toml) and pin it. HOLDS are versions
# kept back from the newest because the newest breaks something (see the header of
# requirements/constraints.txt); pyproject.toml holds them too. A conflict fails the lock
# (pip check) and leaves constraints.txt as it was.
HOLDS := "fastapi==0.139.2" "sqlalchemy>=2.0,<2.1"
LOCK := /tmp/colorization-lock
lock:
	rm -rf $(LOCK) && $(PYTHON) -m venv $(LOCK)
	$(LOCK)/bin/pip install --quiet --no-deps "$(TORCH)" $(TORCH_INDEX)
	$(LOCK)/bin/pip install --quiet $(HOLDS) -e ".[dev]"
	$(LOCK)/bin/pip check
	grep '^#' requirements/constraints.txt > $(LOCK)/header
	$(LOCK)/bin/pip freeze --exclude-editable | sed 's/+cpu//' \
		| cat $(LOCK)/header - > $(LOCK)/constraints.txt
	mv $(LOCK)/constraints.txt requirements/constraints.txt

# Mutation testing of the core modules with their fast tests ([tool.mutmut] in pyproject.toml):
# slow (about half an hour on 2 cores), so not part of `make test` or CI. The score per module
# and every surviving mutant go to bench/MUTATION-results.md; bench/MUTATION.md reads them.
MUTATE_JOBS ?= 2
mutate: setup
	rm -rf mutants
	OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(BIN)/mutmut run --max-children $(MUTATE_JOBS) || true
	$(BIN)/python bench/mutation_report.py > bench/MUTATION-results.md

clean:
	rm -rf $(VENV)

# What bench/gpu_session.sh carries to the GPU machine (issue 11), both git-ignored: the wheels
# of what it lacks (pydantic and its needs, for its Python 3.12, pinned as here) and the dev faces.
GPU_WHEELS := pydantic pydantic-core annotated-types typing-inspection typing-extensions
gpu-wheels:
	rm -rf .whl && $(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d .whl \
		$(foreach w,$(GPU_WHEELS),$(shell grep -i '^$(subst -,[-_],$(w))==' requirements/constraints.txt))

gpu-data:
	mkdir -p .gpu && cp ../shared/data/anime-faces-dev.tar .gpu/
