# kerasseg: `make demo` runs the main job, `make test` runs the test suite.
# Both create the virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-fast test-heavy install clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,imagenet]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py --output-dir runs/demo

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not heavy"

test-heavy: $(STAMP)
	$(PY) -m pytest -m heavy

clean:
	rm -rf runs build *.egg-info .pytest_cache
