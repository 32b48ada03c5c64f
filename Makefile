# Two entry points for a fresh machine: `make quickstart` (the main job on the embedded default
# judge) and `make test`. Both create .venv first if it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
OUT ?= runs/quickstart

.PHONY: quickstart test test-all lint bench clean-venv browser docs rebuild-llama llama-native

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(BIN)/biasjudge: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch is pinned so pip takes the CPU build rather than a multi-GB CUDA one.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	# llama-cpp-python compiles llama.cpp at install, by default for the build machine's CPU
	# (-march=native), which dies with SIGILL where a VM lists AMX or AVX-512 without enabling it, and
	# pip's wheel cache hands such a build to other machines. So biasjudge itself is installed first,
	# then builds llama-cpp-python portably (AVX2 baseline, its own cache; `biasjudge llama build
	# --help`), and only then do the extras go in (llama-cpp-python already satisfied, never rebuilt).
	$(BIN)/python -m pip install -q -e .
	$(BIN)/biasjudge llama build --no-check
	$(BIN)/python -m pip install -q -e ".[llamacpp,hf,train,hub,serve,router,ray,dev]"
	# The smoke check: a short prompt of the embedded model in a child process; a crash is one clear message.
	$(BIN)/biasjudge llama check
	touch $(BIN)/biasjudge

# Put the portable llama-cpp-python back (compiled again), or try one built for this CPU (kept only
# if the smoke check passes there; otherwise the portable one is reinstalled).
rebuild-llama: $(BIN)/biasjudge
	$(BIN)/biasjudge llama build --rebuild
llama-native: $(BIN)/biasjudge
	$(BIN)/biasjudge llama build --native

# The main job: build the dataset (pairs, holdout + leakage check, labels, SFT/DPO rows; seconds),
# then evaluate the embedded default judge and the answer-key baseline on the holdout (minutes).
quickstart: $(BIN)/biasjudge
	$(BIN)/biasjudge data build --data-dir $(DATA) --out $(OUT)/data
	$(BIN)/biasjudge quickstart --data-dir $(DATA) --out $(OUT)

# Headless Chromium for tests/test_web.py, from Debian's packages (Playwright's own download is never used).
browser:
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium fonts-dejavu-core; }

# The documentation site, into build/site (`.venv/bin/mkdocs serve` to read it live). --strict: a
# broken link or anchor, a page left out of the nav, a docstring warning or a public object of the
# API reference without a docstring fails the build. The CLI and API pages are generated here.
docs: $(BIN)/biasjudge
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test: $(BIN)/biasjudge browser docs
	$(BIN)/ruff check src tests bench deploy docs/hooks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --ignore=tests/test_serve_schema.py -m "not heavy"
	# Schemathesis generates no example under pytest-xdist (its tests pass empty there): a run of its own.
	$(BIN)/python -m pytest -q tests/test_serve_schema.py

# Everything, the heavy real-model checks included (the GGUF export round trips, real llama.cpp servers,
# Ray with the real judge, ...: several minutes more than `make test`).
test-all: $(BIN)/biasjudge browser docs
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --ignore=tests/test_serve_schema.py
	$(BIN)/python -m pytest -q tests/test_serve_schema.py

lint: $(BIN)/biasjudge
	$(BIN)/ruff check src tests bench deploy docs/hooks
	$(BIN)/ruff format --check src tests bench deploy
	$(BIN)/mypy

bench: $(BIN)/biasjudge
	$(BIN)/python bench/judge_speed.py --data-dir $(DATA)
	$(BIN)/python bench/shipped_judge.py --data-dir $(DATA)

clean-venv:
	rm -rf $(VENV)
