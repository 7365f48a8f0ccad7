# maestro-gateway — every entry point a developer or CI needs.
#   make demo    start the demo services and the gateway, run workflows end to end
#   make test    lint, type-check and run the whole suite (creates .venv when missing)
#   make bench   the gateway against hand-written asyncio glue
#   make proto   regenerate generated/ from proto/

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := demo/node/node_modules/.installed

.PHONY: all install node test check lint typecheck pytest proto proto-check demo demo-services bench bench-scale clean

all: test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	# An editable install maps only the packages that exist when it runs; generated/ gains
	# packages whenever a .proto is added, so put the directory itself on the path.
	$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "maestro_generated.pth").write_text("$(CURDIR)/generated\n")'
	touch $@

install: $(STAMP)

$(NODE_STAMP): demo/node/package.json
	cd demo/node && npm install --no-audit --no-fund --loglevel=error
	touch $@

node: $(NODE_STAMP)

# The walk-through: the demo services and `maestro serve --port 50050`, then checkouts through
# Execute (success, a compensated failure, retries, a gateway killed mid-call), a Maestro.go
# workflow against a service on Maestro.go's envelope, and an order reserved line by line
# (foreach, a payment sub-workflow, a switch), then undone, and two workflows chained by
# signals (an emit triggers another team's workflow, which waits for `maestro signals send`).
# SHOWCASE_ARGS="--keep" leaves it all running until Ctrl-C; SHOWCASE_ARGS="--free-ports"
# avoids the fixed ports.
demo: $(STAMP) node
	$(PY) -m demo.showcase $(SHOWCASE_ARGS)

# The five demo services (inventory 50051, payments 50052, shipping 50053, mailer 8081, loyalty
# 50054) in the foreground; Ctrl-C or SIGTERM stops them all. DEMO_ARGS="--base-port 60051" moves
# the ports.
demo-services: $(STAMP) node
	$(PY) -m demo.run $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck proto-check

pytest: $(STAMP) node
	$(PY) -m pytest

test: check pytest

proto: $(STAMP)
	$(PY) tools/gen_proto.py

proto-check: $(STAMP)
	$(PY) tools/gen_proto.py --check

BENCH_STAMP := $(VENV)/.installed-bench

# The durable peer's package (DBOS), for make bench only.
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]' --config-settings editable_mode=compat
	touch $@

# Side by side with hand-written glue and DBOS, then the scale figures; a few minutes on 2 cores.
bench: $(BENCH_STAMP)
	$(PY) -m bench.run

bench-scale: $(STAMP)
	$(PY) -m bench.run --scale-only

clean:
	rm -rf $(VENV) demo/node/node_modules .pytest_cache .mypy_cache .ruff_cache
