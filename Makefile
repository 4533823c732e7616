# kerasseg: `make demo` runs the main job, `make test` runs the test suite.
# Both create the virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# MediaPipe, the client the tests run exports with, cannot share the main environment (see its requirements file).
MP_VENV  ?= .venv-mediapipe
MP_REQS  := tests/clients/mediapipe-requirements.txt
MP_STAMP := $(MP_VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1
# Mesa's software Vulkan driver for LiteRT's GPU accelerator (.ci/install-vulkan-driver writes this ICD JSON).
VK_ICD := $(abspath $(VENV))/share/vulkan/icd.d/lvp_icd.json
export VK_ICD_FILENAMES ?= $(VK_ICD)
# pytest-xdist workers, one test file each (module fixtures stay shared): much of the suite waits on single-threaded
# conversions and on subprocesses (Vela, the GPU accelerator, MediaPipe), so two workers fill a 2-core machine.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

.PHONY: demo test test-fast test-heavy install vulkan clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# The crf extra (pydensecrf2) compiles C++ at install time: a compiler and the Python headers (as root).
	command -v g++ >/dev/null || { apt-get update -qq && apt-get install -y -qq g++; }
	test -f "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" || \
		{ apt-get update -qq && apt-get install -y -qq python3-dev; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,imagenet]"
	touch $(STAMP)

$(MP_STAMP): $(MP_REQS)
	test -x $(MP_VENV)/bin/python || $(PYTHON) -m venv $(MP_VENV)
	$(MP_VENV)/bin/python -m pip install -q --upgrade pip
	$(MP_VENV)/bin/python -m pip install -q -r $(MP_REQS)
	touch $(MP_STAMP)

# Installs the Debian packages of the GPU-accelerator checks as root, once (idempotent).
vulkan: $(STAMP)
	bash .ci/install-vulkan-driver $(VK_ICD)

demo: $(STAMP)
	$(PY) tools/demo.py --output-dir runs/demo

test: $(STAMP) $(MP_STAMP) vulkan
	$(PYTEST)

test-fast: $(STAMP) vulkan
	$(PYTEST) -m "not slow and not heavy"

test-heavy: $(STAMP) vulkan
	$(PYTEST) -m heavy

clean:
	rm -rf $(MP_VENV) runs build *.egg-info .pytest_cache
