# estatewatch: `make demo` and `make test` set everything up themselves on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo run test bench lint format clean

$(STAMP): pyproject.toml
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || \
	  echo "note: Mosquitto is not installed; the service will use its embedded Python broker (apt-get install mosquitto mosquitto-clients for the real one)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/estatewatch demo

run: $(STAMP)
	$(VENV)/bin/estatewatch run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

# Benchmarks: figures as ratios against references measured in the same run; never part of
# make test's pass or fail. About 8 minutes plus bench 7's seasons (5 idle, ~19 shared);
# `make bench ARGS=--full` for the issue's sizes (about 22, plus ~40 projected for bench 7's year).
bench: $(STAMP)
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || \
	  { echo "make bench needs Mosquitto: apt-get install mosquitto mosquitto-clients"; exit 1; }
	$(PY) -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
