# The README's two commands: `make demo` (the main job on the embedded default) and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
# Single process on whatever device is present; flags given so no accelerate config file is needed.
# accelerate pins a launched process to OMP_NUM_THREADS (1 if unset): give the one process every core.
LAUNCH := $(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
	--num_cpu_threads_per_process $(shell nproc)

.PHONY: setup demo test test-all bench

setup:
	@bash scripts/setup.sh

demo: setup
	$(LAUNCH) examples/grpo_gsm8k.py $(ARGS)

test: setup
	$(PY) -m pytest -q -m "not slow" $(ARGS)

test-all: setup
	$(PY) -m pytest -q $(ARGS)

bench: setup
	$(PY) bench/checker.py
	$(PY) bench/overhead.py
