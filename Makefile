# takeover: every target sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
CLUSTER_STAMP := $(VENV)/.installed-demo-cluster
NODE_STAMP := tests/node/node_modules/.installed
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_NODE_STAMP := bench/node/node_modules/.installed

.PHONY: test demo demo-cluster redis-server docs lint typecheck conformance bench fuzz soak clean

$(STAMP): pyproject.toml setup.py takeover/protocol/_speedups.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,docs]'
	touch $@

# The demo needs only takeover and Flask.
$(DEMO_STAMP): pyproject.toml setup.py takeover/protocol/_speedups.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[demo]'
	touch $@

# The chat on two servers: gunicorn's gevent workers and takeover serve.
$(CLUSTER_STAMP): pyproject.toml setup.py takeover/protocol/_speedups.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[demo,redis,gunicorn]'
	touch $@

# Node's ws client for interop tests; skipped (and the tests skip) without npm.
$(NODE_STAMP): tests/node/package.json
	if command -v npm >/dev/null; then cd tests/node && npm install --silent --no-audit --no-fund --no-package-lock && touch node_modules/.installed; fi

test: $(STAMP) $(NODE_STAMP) docs
	$(PY) -m ruff check takeover tests examples bench fuzz soak
	$(PY) -m mypy
	TAKEOVER_REQUIRE_SPEEDUPS=1 $(PY) -m pytest -q

# The HTML docs; any Sphinx warning fails the build. -E rereads every page, so a
# warning is reported again on the next run instead of hiding in the cache.
docs: $(STAMP)
	$(PY) -m sphinx -E -W --keep-going -b html docs docs/_build/html

# The chat in examples/chat/: open the printed URL in two browser windows.
demo: $(DEMO_STAMP)
	@echo "open http://127.0.0.1:8000/"
	$(PY) -m takeover serve examples.chat.app:app --bind 127.0.0.1:8000

# The same chat room across processes and servers (examples/chat/cluster.py): Redis on
# 127.0.0.1:6390 without persistence, the chat on gunicorn with 4 workers at
# http://127.0.0.1:8000/ and on takeover serve at http://127.0.0.1:8001/. Ctrl-C stops them all.
# make demo-cluster REDIS_CLUSTER=1: the same on a Redis Cluster of 3 masters (ports 6390-6392).
demo-cluster: $(CLUSTER_STAMP) redis-server
	$(PY) -m examples.chat.cluster $(if $(REDIS_CLUSTER),--redis-cluster)

# Debian's redis-server, for demo-cluster and the bench's fan-out scenario: installed
# when missing if we run as root, else a message saying what to install.
redis-server:
	@if ! command -v redis-server >/dev/null && [ ! -x /usr/bin/redis-server ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; \
		else \
			echo "this target needs redis-server: install it (Debian: apt-get install redis-server) and run it again" >&2; \
			exit 1; \
		fi; \
	fi

# The benchmark (docs/benchmarks.md): takeover against other WebSocket servers, each in
# its own process, driven by a Node load generator. Not part of `make test`.
# BENCH_QUICK=1 make bench: one short round, for a fast check.
# BENCH_BASELINE=REV make bench: also takeover at git revision REV (a temporary worktree),
# in the same rounds, with a before/after table (bench/baseline.py).
# The fan-out scenario (bench/fanout.py) also needs redis-server (the redis-server target
# below installs it).
$(BENCH_STAMP): pyproject.toml setup.py takeover/protocol/_speedups.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]' || { \
		echo "make bench: the bench extra did not install; trying without picows and uvloop (their rows will say skipped)" >&2; \
		$(PY) -m pip install --quiet -e '.[test]' 'gevent-websocket==0.10.1' 'flask-sock>=0.7' 'websockets>=13' \
			'redis>=5' 'hiredis>=2' 'flask-socketio>=5.3' 'python-socketio>=5.11'; }
	touch $@

$(BENCH_NODE_STAMP): bench/node/package.json
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm; \
		else \
			echo "make bench needs Node.js and npm: install them (Debian: apt-get install nodejs npm) and run make bench again" >&2; \
			exit 1; \
		fi; \
	fi
	cd bench/node && npm install --silent --no-audit --no-fund --no-package-lock
	touch $@

bench: $(BENCH_STAMP) $(BENCH_NODE_STAMP) redis-server
	$(PY) -m bench

conformance: $(STAMP)
	$(PY) -m pytest -q tests/interop/test_autobahn.py --autobahn-all

# 5,000 connections echoing for 60 s, then checks that fds, greenlets and RSS
# come back (soak/run.py), after a warm-up round of the same length; then a flood of
# 1-byte fragments (soak/flood.py) with a bound on RSS. Not part of make test; about 5 minutes.
soak: $(BENCH_STAMP) $(BENCH_NODE_STAMP)
	$(PY) -m soak.run

# Coverage-guided fuzzing of the core (atheris): FUZZ_SECONDS per target. New
# inputs grow fuzz/corpus/, crashes land in fuzz/crashes/; make test replays both.
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(PY) -m pip install --quiet 'atheris>=2.3'
	$(PY) -m fuzz.run frames -max_total_time=$(FUZZ_SECONDS)
	$(PY) -m fuzz.run handshake -max_total_time=$(FUZZ_SECONDS)
	$(PY) -m fuzz.run deflate -max_total_time=$(FUZZ_SECONDS)
	$(PY) -m fuzz.run extensions -max_total_time=$(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) build *.egg-info tests/node/node_modules bench/node/node_modules reports docs/_build
