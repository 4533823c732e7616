# kerasseg: `make demo` runs the main job, `make test` runs the test suite.
# Both create the virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1
# Mesa's software Vulkan driver for LiteRT's GPU accelerator (.ci/install-vulkan-driver writes this ICD JSON).
VK_ICD := $(abspath $(VENV))/share/vulkan/icd.d/lvp_icd.json
export VK_ICD_FILENAMES ?= $(VK_ICD)

.PHONY: demo test test-fast test-heavy install vulkan clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# Installs the Debian packages of the GPU-accelerator checks as root, once (idempotent).
vulkan: $(STAMP)
	bash .ci/install-vulkan-driver $(VK_ICD)

demo: $(STAMP)
	$(PY) tools/demo.py --output-dir runs/demo

test: $(STAMP) vulkan
	$(PY) -m pytest

test-fast: $(STAMP) vulkan
	$(PY) -m pytest -m "not slow and not heavy"

test-heavy: $(STAMP) vulkan
	$(PY) -m pytest -m heavy

clean:
	rm -rf runs build *.egg-info .pytest_cache
