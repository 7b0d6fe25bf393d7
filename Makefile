# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Both create .venv when missing and (re)install requirements.txt and requirements-test.txt when they changed.
# `make run ARGS=--force` re-runs what finished (ARGS go to `main.py default`).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test
run: $(VENV)/.installed
	$(PY) main.py default $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

$(VENV)/.installed: requirements.txt requirements-test.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-test.txt
	touch $@
