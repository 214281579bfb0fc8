# Quick start:  make demo   (CPU: tiny Qwen2-VL + synthetic NLVR2)
#               make test   (the test suite, as CI runs it)
# Both are `python3 dev.py demo|test`, which also works without make (Windows: `python dev.py demo`).
PYTHON ?= python3

.PHONY: setup demo test bench clean

setup:
	$(PYTHON) dev.py setup

demo:
	$(PYTHON) dev.py demo

test:
	$(PYTHON) dev.py test

bench:
	$(PYTHON) dev.py run -m bench.data_loading

clean:
	rm -rf .venv artifacts .pytest_cache
