# Quick start:  make demo   (CPU: tiny Qwen2-VL + synthetic NLVR2)
#               make test   (the test suite, as CI runs it)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: setup demo test bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

demo: setup
	HF_HUB_OFFLINE=1 $(PY) scripts/train.py --config training/configs/smoke_cpu.yaml

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: setup
	HF_HUB_OFFLINE=1 $(PY) -m bench.data_loading

clean:
	rm -rf $(VENV) artifacts .pytest_cache
