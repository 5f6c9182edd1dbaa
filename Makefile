# VirtLab: `make run` installs everything and starts the portal; `make test` installs and tests.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: run test setup services guest lint lock bench clean-vms

run: setup
	scripts/run.sh

test: setup
	scripts/test.sh

setup:
	scripts/setup.sh

services:
	scripts/services.sh

guest:
	guest/build.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
# shell scripts under scripts/ and guest/, found by their #! line (guest/init has no .sh)
	shellcheck $$(git ls-files scripts guest | xargs awk 'FNR == 1 && /^#!.*sh$$/ { print FILENAME }')

lock:
	$(PY) -m pip freeze --exclude-editable | grep -v -E '^(pip|setuptools)==' > requirements.txt

bench:
	$(PY) bench/vm.py --quick
	$(PY) bench/docs.py --quick
	$(PY) bench/labs.py --quick
	$(PY) bench/faults.py --quick
	$(PY) bench/classes.py --quick
	$(PY) bench/isolation.py --quick
	$(PY) bench/timeline.py --quick
