# Two entry points: `make demo` (the end-to-end job) and `make test` (the test suite).
# `make zoo` relaxes real torchvision and timm CNNs (benchmarks/bench_zoo.py says why .zoo/ is separate).
# Both build .venv on first use; torch is pinned to the CPU wheel that lies on this machine's
# disk (a bare `pip install torch` would download a multi-GB CUDA build).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.xdfx-installed

ZOO := .zoo

.PHONY: demo test bench zoo clean

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

$(ZOO)/.installed: | $(STAMP)
	rm -rf $(ZOO)
	$(PY) -m pip install -q --target $(ZOO) --no-deps torchvision==0.28.0 timm==1.0.31
	touch $@

zoo: $(STAMP) $(ZOO)/.installed
	PYTHONPATH=$(ZOO) $(PY) benchmarks/bench_zoo.py --out bench_zoo

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
