# Two commands on a fresh machine: `make pretrain` (the quick start) and `make test`.
# Both create the virtual environment and install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist
# pytest-xdist workers: one per core of the 2-core CI machine (each test file runs whole on one worker).
TEST_WORKERS ?= 2

.PHONY: install data lint test pretrain gpu-check clean

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: anything else asking for `torch` would pull a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Fashion-MNIST IDX files (Debian package, MIT licence): the quick start's and the tests' real data.
data:
	@if [ ! -e $(FMNIST)/t10k-labels-idx1-ubyte.gz ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; fi; \
	fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install data lint
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

# The quick start's torch threads: every core up to 4 (accelerate launch would give it one;
# a model this small gains little beyond 4).
CPU_THREADS ?= $(shell n=$$(nproc); [ $$n -gt 4 ] && n=4; echo $$n)

pretrain: install data
	$(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		--num_cpu_threads_per_process $(CPU_THREADS) scripts/pretrain.py

# On a GPU machine (H100/H200): the CUDA tests, step / pipeline / DDP-FSDP benchmarks, in under 8 minutes.
gpu-check:
	PYTHON=$(if $(wildcard $(PY)),$(PY),python3) bash scripts/gpu_check.sh

clean:
	rm -rf $(VENV) outputs
