# Two entry points for a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
DATA   ?= ../shared/datasets/UTKFace
RESULTS ?= results

.PHONY: setup run test test-fast docs lock reports browser clean

# Idempotent: the stamp is rebuilt only when the lock or the package definition changes.
# The exact versions come from requirements.lock (Python 3.11, x86-64 Linux); setup.py keeps
# the ranges for installs elsewhere. `make lock` regenerates the lock from setup.py.
setup: $(VENV)/.setup-stamp

$(VENV)/.setup-stamp: setup.py requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# pip-tools, so that pip's resolver (which honours Requires-Python's upper bounds) picks
# what pip installs; run it with the Python 3.11 the lock is for.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip-tools
	$(VENV)/bin/pip-compile --quiet --extra test --extra docs --strip-extras --no-header \
	  --annotation-style line -o requirements.lock setup.py

# The quickstart experiment: both backends, the study's FCN vs a small CNN, one
# UTKFace fold; resumable, and it ends by writing results/quickstart/report.md.
run: setup
	$(PY) -m harness data summary --dataset utkface --path $(DATA)
	$(PY) -m harness run experiments/quickstart.yaml --data $(DATA) --results $(RESULTS)

# Test files run on TEST_WORKERS processes (pytest-xdist), each file whole in one of them
# so that its module fixtures (trained runs) are built once.
TEST_WORKERS ?= 2
test: setup browser
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

# The edit-test loop: nothing that trains or opens a browser (under 2 minutes on 2 cores).
test-fast: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not trains and not browser" tests

# The manual (mkdocs.yml, docs/): the CLI reference and benchmark pages are generated
# first, so they cannot drift; --strict turns every warning (a broken link) into an error.
docs: setup
	$(PY) docs/generate.py
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

# The report tests open report.html in Debian's chromium; install it where it is missing
# and we may (root with apt). Otherwise the tests say what to install.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "note: no chromium; the browser tests will fail until Debian's chromium package is installed"

# Regenerate every published report under docs/results/ from the stored results of the
# same name (results/NAME), and the report test's expected output from its fixture.
PUBLISHED := $(notdir $(wildcard docs/results/*))
reports: setup
	@for name in $(PUBLISHED); do \
	  if [ -f $(RESULTS)/$$name/index.jsonl ]; then \
	    $(PY) -m harness report $(RESULTS)/$$name --out docs/results/$$name || exit 1; \
	  else echo "skipped $$name: no stored results in $(RESULTS)/$$name (harness run experiments/$$name.yaml)"; fi; \
	done
	$(PY) -m harness report tests/fixtures/results/report_fixture --out tests/fixtures/report_fixture_report

clean:
	rm -rf $(VENV) .cache
