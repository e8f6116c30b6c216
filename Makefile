# Two entry points: `make demo` (the whole method on the built-in miniature) and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

WARM_IMPORTS := import brain_trainer_story, brain_evaluate, eval_downstream, eval_phonemes, make_demo_data, \
	make_downstream_data, whisper_ct2, demo_report, peft, sklearn.linear_model, matplotlib.pyplot, librosa, pytest, \
	transformers.models.whisper.modeling_whisper, transformers.models.wav2vec2.modeling_wav2vec2, \
	transformers.models.hubert.modeling_hubert, transformers.models.wavlm.modeling_wavlm, \
	transformers.models.data2vec.modeling_data2vec_audio

.PHONY: demo demo-quick test test-floors venv clean

venv: $(STAMP)
$(STAMP): requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# byte-compiling every installed file took 71 of 114 s on 2 cores; compile only what the toolkit imports
	# (written even where PYTHONDONTWRITEBYTECODE is set, so that later runs find it compiled)
	$(BIN)/pip install --quiet --no-compile -r requirements.txt
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -c "$(WARM_IMPORTS)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python run_demo.py --out runs/demo

demo-quick: $(STAMP)
	$(BIN)/python run_demo.py --out runs/demo-quick --quick

# the ten slowest tests close the log: CI must stay under 20 minutes on 2 cores (README, Known limits)
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=10 tests

# The oldest releases requirements.txt allows, each `>=` floor pinned, in their own venv (a maintainer's check
# after changing a floor or the code's use of a package: CI tests the newest, and both would not fit its 20 min).
FLOORS := .venv-floors
test-floors:
	rm -rf $(FLOORS)
	$(PY) -m venv $(FLOORS)
	sed -E 's/^([A-Za-z0-9_.-]+)>=([^,]+)(,.*)?$$/\1==\2/' requirements.txt > $(FLOORS)/floors.txt
	$(FLOORS)/bin/pip install --quiet --upgrade pip
	$(FLOORS)/bin/pip install --quiet --no-compile -r $(FLOORS)/floors.txt
	$(FLOORS)/bin/python -m pytest -q tests

clean:
	rm -rf runs data .pytest_cache $(FLOORS)
