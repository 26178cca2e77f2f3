# make demo / make test / make bench: each creates .venv when it is missing.
# torch 2.14.1 + torchvision 0.29.1 come first and pinned: pip finds them on this machine's disk,
# and the registry's torchvision does not import beside the 2.13.0 CPU file.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BENCH  := $(VENV)/bin/bench
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-all bench golden clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[test,crf]" || $(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: venv
	$(BENCH) demo --profile demo --results results

test: venv
	$(PY) -m pytest -q -n 2 --dist loadfile
	$(BENCH) report --check results/golden

test-all: venv
	$(PY) -m pytest -q -m "" -n 2 --dist loadfile

bench: venv
	$(PY) benchmarks/run_all.py

golden: venv
	$(BENCH) report --check results/golden --update-golden

clean:
	rm -rf results/demo cache data/phantom
