# Two entry points for a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
DATA   ?= ../shared/datasets/UTKFace
RESULTS ?= results

.PHONY: setup run test clean

# Idempotent: the stamp is rebuilt only when the package definition changes.
setup: $(VENV)/.setup-stamp

$(VENV)/.setup-stamp: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

# The quickstart experiment: both backends, the study's FCN vs a small CNN, one
# UTKFace fold; resumable, and it ends by writing results/quickstart/report.md.
run: setup
	$(PY) -m harness data summary --dataset utkface --path $(DATA)
	$(PY) -m harness run experiments/quickstart.yaml --data $(DATA) --results $(RESULTS)

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) .cache
