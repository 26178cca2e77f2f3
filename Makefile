# make demo / make test / make bench: each creates .venv when it is missing.
# torch 2.14.1 + torchvision 0.29.1 come first and pinned: pip finds them on this machine's disk,
# and the registry's torchvision does not import beside the 2.13.0 CPU file.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BENCH  := $(VENV)/bin/bench
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-all bench docs golden golden-calibrate golden-inputs clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[test,crf]" || $(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: venv
	$(BENCH) demo --profile demo --results results

# the tests, then every golden layer under results/golden: exact (fixed inputs, seconds) and train (minutes)
test: venv
	$(PY) -m pytest -q -n 2 --dist loadfile
	$(BENCH) check results/golden

test-all: venv
	$(PY) -m pytest -q -m "" -n 2 --dist loadfile

bench: venv
	$(PY) benchmarks/run_all.py

# docs/cli.md: every command's --help, generated from the app (a test fails when it is stale)
docs: venv
	$(PY) -m bench.cli.docs docs/cli.md

# rewrite the golden tables of every layer, or of one: make golden LAYER=exact
golden: venv
	$(BENCH) check results/golden$(if $(LAYER),/$(LAYER)) --update-golden

# recalibrate the training layer (its study under every seed x kernel set x thread count, then its tables
# and tolerances rewritten): about an hour on 2 idle cores. Two kernel sets that differ on this CPU: on an
# AVX2 machine (this project's) native = avx2, so native,default; on an AVX-512 machine KERNELS=native,avx2
KERNELS ?= native,default
golden-calibrate: venv
	$(BENCH) check results/golden/train --calibrate --seeds 0,1,2 --threads 1,2 --kernels $(KERNELS)

# rewrite the exact layer's fixed inputs (only after a deliberate change of their generator), then: make golden LAYER=exact
golden-inputs: venv
	$(PY) -m bench.golden.inputs --regenerate results/golden/exact/inputs

clean:
	rm -rf results/demo cache data/phantom
