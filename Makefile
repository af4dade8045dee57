# takeover: every target sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := tests/node/node_modules/.installed

.PHONY: test demo lint typecheck conformance clean

$(STAMP): pyproject.toml setup.py takeover/protocol/_speedups.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# Node's ws client for interop tests; skipped (and the tests skip) without npm.
$(NODE_STAMP): tests/node/package.json
	if command -v npm >/dev/null; then cd tests/node && npm install --silent --no-audit --no-fund --no-package-lock && touch node_modules/.installed; fi

test: $(STAMP) $(NODE_STAMP)
	$(PY) -m ruff check takeover tests examples
	$(PY) -m mypy
	TAKEOVER_REQUIRE_SPEEDUPS=1 $(PY) -m pytest -q

demo: $(STAMP)
	$(PY) examples/echo.py --host 127.0.0.1 --port 8000

conformance: $(STAMP)
	$(PY) -m pytest -q tests/test_autobahn.py --autobahn-all

clean:
	rm -rf $(VENV) build *.egg-info tests/node/node_modules reports
