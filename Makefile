# Two entry points: `make demo` (the end-to-end job) and `make test` (the test suite).
# Both build .venv on first use; torch is pinned to the CPU wheel that lies on this machine's
# disk (a bare `pip install torch` would download a multi-GB CUDA build).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.xdfx-installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m xdfx demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_relax.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
