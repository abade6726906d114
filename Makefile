# Schoolhouse. `make run` serves the demo locally (development mode); `make up` runs the whole stack in
# production mode; `make test` runs the suite on throwaway PostgreSQL and Redis servers
# (scripts/run_tests.sh). Every target that needs the venv builds it first.
SHELL := /bin/bash

PYTEST_ARGS ?= -q
APP_ENV ?= development
export APP_ENV
# make up DEMO=1 (or SEED_DEMO=1 in the environment): also seed the demo schools.
DEMO ?= 0

VENV := .venv
STAMP := $(VENV)/stamp
FLASK := $(VENV)/bin/flask --app wsgi

.PHONY: venv test test-fast fuzz lint format run clean

$(STAMP): requirements.txt requirements-dev.txt
	@py=$$(command -v python3.11 || command -v python3) || { echo "python3.11 (or python3) not found" >&2; exit 1; }; \
	echo "creating $(VENV) with $$py"; \
	"$$py" -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

venv: $(STAMP)

# The benchmark's peers (Django REST Framework, FastAPI) and its open-loop generator's uvloop: only the
# bench targets install them (bench/requirements.txt), constrained by requirements.txt.
BENCH_STAMP := $(VENV)/bench-stamp
$(BENCH_STAMP): bench/requirements.txt $(STAMP)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r bench/requirements.txt -c requirements.txt
	touch $@

test: $(STAMP)  ## the whole suite, subprocess tests included
	bash scripts/run_tests.sh $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the suite without the `slow` (subprocess: gunicorn, Celery, SMTP, embedded) tests
	bash scripts/run_tests.sh $(PYTEST_ARGS) -m "not slow"

fuzz: $(STAMP)  ## the contract fuzzer (tests/test_contract.py) longer: FUZZ_EXAMPLES per operation, a new seed each run
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-60} FUZZ_RANDOM=1 bash scripts/run_tests.sh -q -rA -p no:logging -m contract tests/test_contract.py

lint: $(STAMP)  ## ruff (lint + format check), mypy on app/core, import contracts, no import cycles
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python scripts/import_cycles.py

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

run: $(STAMP)
	mkdir -p instance
	$(FLASK) db upgrade
	$(FLASK) seed demo --if-empty
	@port=$${PORT:-5000}; \
	echo; \
	echo "Schoolhouse ($$APP_ENV) on http://127.0.0.1:$$port"; \
	echo "  API docs: http://127.0.0.1:$$port/api/v1/docs"; \
	echo "  Demo logins (password: $${DEMO_PASSWORD:-schoolhouse-demo}):"; \
	for who in admin@demo-academy.test teacher@demo-academy.test guardian@demo-academy.test \
	           student@demo-academy.test accountant@demo-academy.test admin@hillside.test; do \
	    echo "    $$who"; \
	done; \
	if [ -z "$${REDIS_URL:-}" ]; then \
	    echo "  Scheduled jobs (BEAT_SCHEDULE: absence alerts, outbox, ...) run in this process: flask jobs list"; \
	fi; \
	echo
	$(FLASK) run --host 127.0.0.1 --port $${PORT:-5000}

.PHONY: daraja-sim
daraja-sim: $(STAMP)  ## the local Daraja (M-Pesa) + Africa's Talking simulator on SIM_PORT (docs/PAYMENTS.md)
	$(VENV)/bin/python scripts/daraja_sim.py --port $${SIM_PORT:-8089}

clean:
	rm -rf $(VENV) instance

.PHONY: restore-drill
restore-drill: $(STAMP)  ## dump DATABASE_URL (or DUMP=file), restore into a scratch database, compare row counts
	@test -n "$$DATABASE_URL" || { echo "make restore-drill: set DATABASE_URL to the PostgreSQL database to drill" >&2; exit 2; }
	$(VENV)/bin/python scripts/restore_drill.py $(if $(DUMP),--dump $(DUMP))

.PHONY: bench bench-quick bench-workers bench-cpu bench-instr soak capacity
soak: $(STAMP)  ## the make-up stack under a school-morning mix for SOAK_MINUTES (60): bench/results/soak.json (bench/soak.py)
	@ulimit -n 65536 2>/dev/null || true; $(VENV)/bin/python bench/soak.py

CAPACITY_RATES ?= 60,80,100,110,120,130,140
capacity: $(STAMP)  ## the same mix ramped through CAPACITY_RATES req/s, 2 minutes each: users carried under p99 200 ms (bench/results/capacity.json)
	@ulimit -n 65536 2>/dev/null || true; SOAK_RATES=$(CAPACITY_RATES) $(VENV)/bin/python bench/soak.py

bench: $(BENCH_STAMP)  ## full benchmark: 100,000 students, 5,000,000 attendance rows, 15 s per scenario
	@command -v wrk >/dev/null || apt-get install -y wrk
	@ulimit -n 65536 2>/dev/null || true; $(VENV)/bin/python bench/run.py

bench-quick: $(BENCH_STAMP)  ## the same, shorter and smaller (< 5 minutes)
	@command -v wrk >/dev/null || apt-get install -y wrk
	@ulimit -n 65536 2>/dev/null || true; $(VENV)/bin/python bench/run.py --quick

bench-cpu: $(STAMP)  ## CPU µs per request in process, API vs references (bench/cpu.py; --profile CASE)
	$(VENV)/bin/python bench/cpu.py

bench-instr: $(STAMP)  ## instructions per request (valgrind's callgrind): comparable on a busy machine
	@command -v valgrind >/dev/null || apt-get install -y valgrind
	$(VENV)/bin/python bench/cpu.py --instructions

bench-workers: $(STAMP)  ## compare gunicorn worker classes and counts (the choice in gunicorn.conf.py)
	@command -v wrk >/dev/null || apt-get install -y wrk
	@ulimit -n 65536 2>/dev/null || true; $(VENV)/bin/python bench/run.py --workers

.PHONY: up worker
# Production mode, whatever APP_ENV says: the Procfile's processes run it too. No demo logins unless
# asked (DEMO=1 or SEED_DEMO=1), and then with a made-up password unless DEMO_PASSWORD is set.
up: export APP_ENV = production
up: $(STAMP)  ## the whole stack (Procfile: web on PORT, worker, beat, flower on FLOWER_PORT) with honcho, on DATABASE_URL + REDIS_URL
	@test -n "$$DATABASE_URL" || { echo "make up: set DATABASE_URL to a PostgreSQL database, e.g. postgresql://postgres@127.0.0.1:5432/schoolhouse" >&2; exit 2; }
	@test -n "$$REDIS_URL" || { echo "make up: set REDIS_URL, e.g. redis://127.0.0.1:6379 (db 0 cache, 1 rate limits, 2 Celery)" >&2; exit 2; }
	mkdir -p instance
	$(VENV)/bin/python scripts/redis_memory.py
	$(FLASK) db upgrade
	@if [ "$(DEMO)" = 1 ] || [ "$${SEED_DEMO:-0}" = 1 ]; then \
	    made=; \
	    if [ -z "$${DEMO_PASSWORD:-}" ]; then \
	        made=1; export DEMO_PASSWORD="$$($(VENV)/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')"; \
	    fi; \
	    out="$$($(FLASK) seed demo --if-empty)" || exit 1; echo "$$out"; \
	    case "$$out" in *skipped*) ;; *) [ -z "$$made" ] || echo "demo password: $$DEMO_PASSWORD (set DEMO_PASSWORD to choose)";; esac; \
	fi
	@export PATH="$(CURDIR)/$(VENV)/bin:$$PATH" FLOWER_USER="$${FLOWER_USER:-admin}"; \
	export PORT="$${PORT:-5000}" FLOWER_PORT="$${FLOWER_PORT:-5555}"; \
	honcho run sh -c 'echo "web: http://127.0.0.1:$$PORT (PORT)  flower: http://127.0.0.1:$$FLOWER_PORT (FLOWER_PORT)"'; \
	if [ -z "$${FLOWER_PASSWORD:-}" ]; then \
	    export FLOWER_PASSWORD="$$(python -c 'import secrets; print(secrets.token_urlsafe(12))')"; \
	    echo "flower: user $$FLOWER_USER  password $$FLOWER_PASSWORD (set FLOWER_PASSWORD to choose)"; \
	fi; \
	exec honcho start -f Procfile

worker: $(STAMP)  ## one Celery worker on all queues (needs REDIS_URL; without it tasks run in the web process)
	@test -n "$$REDIS_URL" || { echo "make worker: set REDIS_URL; without it tasks run inside the web process" >&2; exit 2; }
	$(VENV)/bin/celery -A celery_worker worker -Q default,exports,notifications,maintenance --concurrency 2 -l info
