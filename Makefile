# Two entry points: `make demo` and `make test`. Both create .venv and install as needed.
# `make test-paddle` builds a second venv with the paddle extra (PaddleOCR pins numpy<2.4 and
# PyYAML==6.0.2, so it does not share .venv) and runs the PaddleOCR tests in it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PADDLE_VENV := .venv-paddle
PADDLE_BIN := $(PADDLE_VENV)/bin
PADDLE_STAMP := $(PADDLE_VENV)/.installed-stamp
DEMO_DIR ?= demo-output

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180
export HF_HUB_OFFLINE ?= 1
export ARGOS_CHUNK_TYPE ?= SPACY

.PHONY: install install-paddle demo test test-paddle bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch goes first so that packages depending on it (argostranslate via stanza) reuse this build.
# check_cv2 --fix leaves exactly one cv2 distribution, the one pyproject.toml pins.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python .ci/check_cv2.py --fix
	touch $(STAMP)

$(PADDLE_BIN)/python:
	$(PYTHON) -m venv $(PADDLE_VENV)

$(PADDLE_STAMP): $(PADDLE_BIN)/python pyproject.toml
	$(PADDLE_BIN)/pip install -q --upgrade pip setuptools wheel
	$(PADDLE_BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(PADDLE_BIN)/pip install -q -e '.[paddle,test]'
	$(PADDLE_BIN)/python .ci/check_cv2.py --fix
	touch $(PADDLE_STAMP)

install: $(STAMP)

install-paddle: $(PADDLE_STAMP)

demo: $(STAMP)
	$(BIN)/mmretinal demo --out $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/python .ci/check_cv2.py
	$(BIN)/python -m pytest

test-paddle: $(PADDLE_STAMP)
	$(PADDLE_BIN)/python .ci/check_cv2.py
	$(PADDLE_BIN)/python -m pytest -m paddle tests/pipeline/test_ocr_paddle.py

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
