# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create (or refresh, when pyproject.toml changed) the virtualenv in .venv first.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format bench venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "citykey needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## The demo: API + embedded broker + SQLite + simulated gateways, ready to unlock a door.
demo: $(STAMP)
	$(VENV)/bin/citykey demo

## The test suite, against the machine's real PostgreSQL and Mosquitto (see README).
## pytest exit code 5 means "no tests collected": that is a failure here, said plainly.
test: $(STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; fi; \
	exit $$rc

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(STAMP)
	$(PY) bench/validator.py
	$(PY) bench/unlock.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
