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

run: setup
	$(PY) -m harness data summary --dataset utkface --path $(DATA)
	$(PY) -m harness data plot-splits --dataset utkface --path $(DATA) \
		--protocol stratified_kfold --folds 5 --out $(RESULTS)/data/utkface_splits

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) .cache
