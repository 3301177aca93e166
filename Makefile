# Two entry points: `make demo` (the end-to-end job) and `make test` (the test suite).
# `make zoo` relaxes real torchvision and timm CNNs (benchmarks/bench_zoo.py says why .zoo/ is separate).
# `make fno-reference` runs neuraloperator's FNO on the Burgers sweep (installed into .fno/, without
# its logging and dataset dependencies, which the model does not import).
# Both build .venv on first use; torch is pinned to the CPU wheel that lies on this machine's
# disk (a bare `pip install torch` would download a multi-GB CUDA build).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.xdfx-installed

ZOO := .zoo
FNO := .fno

.PHONY: demo test bench zoo fno-reference clean

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

$(FNO)/.installed: | $(STAMP)
	rm -rf $(FNO)
	$(PY) -m pip install -q --target $(FNO) --no-deps neuraloperator==2.0.0 tensorly==0.10.0 tensorly-torch==0.5.0 \
		opt-einsum==3.4.0 zencfg==1.0.0 configmypy==0.2.0 ruamel.yaml==0.19.1
	touch $@

fno-reference: $(STAMP) $(FNO)/.installed
	PYTHONPATH=$(FNO) $(PY) benchmarks/sweep_resolution.py --task burgers --res 256,512,1024,2048 --models fno-neuralop \
		--epochs 60 --out sweep_burgers_e60_neuralop

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
