# `make test`, `make torture` and `make demo` build .venv from nothing (or update it) before running.
# `make test` runs the fault-injection suite's fast subset; `make torture` its full run (README, Reliability).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test torture demo venv clean

venv: $(STAMP)

$(STAMP): setup.cfg setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not torture_long"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'make test: no tests collected' >&2; exit 1; fi; exit $$rc

torture: $(STAMP)
	$(BIN)/python -m pytest -q -s -m "torture or torture_long" tests/test_torture.py

demo: $(STAMP)
	$(BIN)/ovml demo

clean:
	rm -rf $(VENV) *.egg-info
