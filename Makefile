# Two commands for a newcomer (README.md): `make demo` and `make test`.
# Both create the environment in .venv first; nothing is downloaded at run time but packages.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint

$(STAMP): pyproject.toml setup.py engine/compiled.cpp
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev,bench]'  # bench: ONNX Runtime baselines
	touch $(STAMP)

# The demo replays a bundled edit log (docs/demo/, made by `vqedit edits synth`) through the
# language server, a private daemon and the engine, as an editor would drive them.
demo: $(STAMP)
	$(VENV)/bin/vqedit doctor
	mkdir -p build/demo
	$(VENV)/bin/vqedit replay docs/demo/bbc-sport.jsonl --via lsp --verify 100 \
		--json build/demo/replay.json --csv build/demo/replay.csv --plot build/demo/replay.png
	@echo "plots: build/demo/replay.png; every figure: build/demo/replay.json"

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
