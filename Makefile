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

.PHONY: setup run test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# The main job: train LeNet-300-100 on MNIST and print its test error.
run: setup
	$(BIN)/deep-compression train --model lenet-300-100 --dataset mnist --epochs 30 \
		--out runs/lenet-300-100/dense.safetensors
	$(BIN)/deep-compression evaluate runs/lenet-300-100/dense.safetensors

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
