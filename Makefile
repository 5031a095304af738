# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create (or refresh, when pyproject.toml changed) the virtualenv in .venv first.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format bench venv clean chromium screenshots

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

## The browser tests drive Debian's Chromium (Playwright's own browser download is not used).
## Missing and root: install it; missing otherwise: fail, saying how to get it.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Chromium for the browser tests (apt-get)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq chromium fonts-dejavu-core; \
		else \
			echo "FAIL: $(CHROMIUM) is missing; the browser tests need it:" \
				"sudo apt-get install -y chromium fonts-dejavu-core"; exit 1; \
		fi; \
	fi

## The test suite, against the machine's real PostgreSQL and Mosquitto (see README).
## pytest exit code 5 means "no tests collected": that is a failure here, said plainly.
test: $(STAMP) chromium
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; fi; \
	exit $$rc

## Refresh the screenshots in docs/img (taken by the browser tests).
screenshots: $(STAMP) chromium
	CITYKEY_SCREENSHOT_DIR=docs/img $(PY) -m pytest tests/browser -q

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
	$(PY) bench/e2e.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
