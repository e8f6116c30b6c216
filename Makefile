# Two entry points: `make demo` (the whole method on the built-in miniature) and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo demo-quick test venv clean

venv: $(STAMP)
$(STAMP): requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python run_demo.py --out runs/demo

demo-quick: $(STAMP)
	$(BIN)/python run_demo.py --out runs/demo-quick --quick

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf runs data .pytest_cache
