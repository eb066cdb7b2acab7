# The two commands of the README: `make run` and `make test`. Both create the virtual
# environment on first use. torch is installed first, pinned to the CPU wheel, so that the
# project's loose `torch>=` requirement is already satisfied and no CUDA build is pulled.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

# Use the shared MNIST copy when this checkout sits next to it (development machines, CI).
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/mnist),)
export DEEP_COMPRESSION_DATA ?= $(SHARED_DATA)
endif
# The user cache every command looks in (deep_compression.data.cache_dir).
CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/deep-compression

.PHONY: setup data run test lint clean

setup: $(VENV)/.installed data

# Make the shared MNIST copy findable by every later command, not only by make's: link it
# into the user cache (nothing is copied; a cache that already holds MNIST is left alone).
data:
	@if [ -d "$(SHARED_DATA)/mnist" ] && [ ! -d "$(CACHE)/mnist" ]; then \
		mkdir -p "$(CACHE)" && ln -sfn "$(SHARED_DATA)/mnist" "$(CACHE)/mnist" && \
		echo "linked $(SHARED_DATA)/mnist into $(CACHE)"; fi

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# The main job: the whole pipeline on LeNet-300-100 from scratch (train, prune, quantize,
# encode), printing the per-stage and per-layer tables. Re-running resumes the finished run.
# One torch thread: LeNet-300-100 gains little from two, and two collapse on a busy machine.
run: setup
	$(BIN)/deep-compression compress --recipe recipes/lenet-300-100.toml --train \
		--out-dir runs/make-run/lenet-300-100 --threads 1
	$(BIN)/deep-compression evaluate runs/make-run/lenet-300-100/model.dcz

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks examples

clean:
	rm -rf $(VENV) runs .pytest_cache
