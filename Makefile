# One entry point for people and CI. Every target sets itself up (venv from uv.lock; PostgreSQL
# from Debian's packages when initdb/pg_ctl are absent).
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.9
CHECKOV_VERSION := 3.3.30
# The CDK CLI, pinned: `npx aws-cdk@2` would take whatever is newest on the day.
CDK_CLI := npx --yes aws-cdk@2.1149.0
# Deploy-time context for the app: CONTEXT="alertEmail=you@example.com compactMemoryMb=3538".
# It must reach infra/app.py, which synthesizes; `cdk deploy --app cdk.out` never re-runs the app,
# so `-c` in CDK_ARGS would be silently ignored (refused below).
APP_CONTEXT = $(if $(STAGE),-c stage=$(STAGE)) $(foreach kv,$(CONTEXT),-c $(kv))
TOOLS := .tools
UV := $(TOOLS)/bin/uv
PY := .venv/bin/python
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help setup postgres test test-scale test-big-plan lint fmt typecheck bench demo synth build deploy destroy clean no-context-in-cdk-args mutate mutate-sql

help:
	@echo "make demo   - run the whole system on an embedded local stack (no AWS, no Docker)"
	@echo "make test   - the whole test suite against real PostgreSQL and moto's server"
	@echo "make test-scale - 2,000 datasets under throttling, then priority with 1,100 waiting (slow; smaller in make test)"
	@echo "make test-big-plan - one run of 3,000 bins within Step Functions' limits (BINS=n; 800 in make test)"
	@echo "make lint   - ruff + mypy + checkov on the synthesized template"
	@echo "make mutate - mutation testing (mutmut) per module; MODULE=logic for one; not part of make test"
	@echo "make mutate-sql - mutation testing of the catalog's SQL functions; FUNCTIONS=commit_compaction for some"
	@echo "make bench  - engine (3 shapes: tiny, medium, wide; cold processes) vs DuckDB and polars, then the pipeline"

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --all-groups --compile-bytecode
	touch $@

# Bytecode is written here, once, whatever PYTHONDONTWRITEBYTECODE says: without it every start
# of the CLI compiles each module it imports again (~1 s). Only changed sources are recompiled.
setup: .venv/.synced postgres
	@$(PY) -m compileall -q -j 0 functions

# PostgreSQL server binaries are needed by the tests and the local stack.
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing PostgreSQL from Debian's packages..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "PostgreSQL is missing: run 'sudo apt-get install -y postgresql'"; exit 1; fi

test: setup
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

# Scale (issue 19): 2,000 pending datasets under a capped account concurrency, one scheduled
# trigger; then priority with 1,100 scheduled datasets waiting. The figures are printed.
SCALE_DATASETS ?= 2000
test-scale: setup
	FUSOU_SCALE_DATASETS=$(SCALE_DATASETS) $(PY) -m pytest -p no:cacheprovider -s \
		tests/pipeline/test_scale.py tests/pipeline/test_priority_at_scale.py $(PYTEST_ARGS)

# Any dataset size (issue 19, item 4): one run of 3,000 bins (BINS=n for another) on the local stack,
# every state under 256 KB and every history under 25,000 events; ~3.5 min (make test runs 800).
test-big-plan: setup
	FUSOU_BIG_PLAN_BINS=$(or $(BINS),3000) $(PY) -m pytest -p no:cacheprovider -s tests/pipeline/test_any_dataset_size.py $(PYTEST_ARGS)

# Mutation testing: long (a module takes minutes to an hour), so never part of `make test` or CI.
mutate: setup
	$(PY) scripts/mutate.py $(MODULE)

mutate-sql: setup
	$(PY) scripts/mutate_sql.py $(FUNCTIONS)

lint: .venv/.synced
	.venv/bin/ruff check functions tests infra bench scripts
	.venv/bin/ruff format --check functions tests infra bench scripts
	.venv/bin/mypy
	CDK_OUTDIR=build/lint-cdk.out $(PY) infra/app.py > /dev/null
	$(UV) tool run --quiet --from checkov==$(CHECKOV_VERSION) checkov --skip-download --quiet --compact \
		--framework cloudformation -f build/lint-cdk.out/dev-kc-compaction.template.json

fmt: .venv/.synced
	.venv/bin/ruff format functions tests infra bench
	.venv/bin/ruff check --fix functions tests infra bench

bench: setup
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/pipeline_overhead.py

# The whole system on an embedded local stack (no AWS account, no Docker).
demo: setup
	.venv/bin/fusou-compaction demo $(DEMO_ARGS)

# Infrastructure (infra/): Lambda assets without Docker, offline synth, deploy.
build: .venv/.synced
	$(PY) infra/build_assets.py

synth: .venv/.synced
	$(PY) infra/app.py $(APP_CONTEXT)

no-context-in-cdk-args:
	@case " $(CDK_ARGS) " in *" -c "*|*" --context"*) \
		echo "CDK_ARGS carries -c/--context, which cdk deploy --app cdk.out ignores: use CONTEXT=\"key=value ...\""; \
		exit 2;; esac

deploy: no-context-in-cdk-args build
	$(PY) infra/app.py -c requireBuiltAssets=true $(APP_CONTEXT)
	$(CDK_CLI) deploy --app cdk.out --require-approval broadening $(CDK_ARGS)

destroy: no-context-in-cdk-args .venv/.synced
	$(PY) infra/app.py $(APP_CONTEXT)
	$(CDK_CLI) destroy --app cdk.out $(CDK_ARGS)

clean:
	rm -rf .venv $(TOOLS) cdk.out build .fusou .bench
