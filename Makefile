# cloudshop — every command a developer and CI need. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export SPARK_LOCAL_IP := 127.0.0.1
export PATH := $(CURDIR)/.cache/bin:$(PATH)

.DEFAULT_GOAL := help
.PHONY: help run run-full test test-fast lint typecheck build synth bench loadtest schemas system-deps tools clean web \
        analytics-once analytics-stream analytics-test analytics-test-spark35 analytics-package

help: ## list the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.run: pyproject.toml
	@echo "[make] creating $(VENV) and installing the runtime (first run takes a minute) ..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e '.[local]'
	@touch $@

$(VENV)/.dev: $(VENV)/.run
	@echo "[make] installing the development, CDK and analytics tools ..."
	@$(BIN)/pip install -q -e '.[local,dev,cdk,analytics]'
	@touch $@

run: $(VENV)/.run web ## start the whole platform locally (embedded profile): the shop on http://127.0.0.1:8000/
	@$(BIN)/cloudshop up

run-full: $(VENV)/.run system-deps web ## start it on real PostgreSQL, Kafka, dynalite (DynamoDB) and ElasticMQ (SQS)
	@$(BIN)/cloudshop up --profile full

system-deps: ## install the system packages the real servers and the browser tests need (PostgreSQL, Java, Maven, Node.js, Chromium, Prometheus and promtool)
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql-15"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	command -v go >/dev/null || missing="$$missing golang-go"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	[ -x "$${CLOUDSHOP_CHROMIUM:-/usr/bin/chromium}" ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "[make] apt-get install$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

tools: $(VENV)/.dev system-deps ## install test tools (kustomize, actionlint, checkov), the Kafka and ElasticMQ jars, dynalite
	@bash .ci/install-tools.sh
	@$(BIN)/python -m cloudshop.local.servers fetch

test: tools web ## run the whole suite (starts PostgreSQL, Kafka, dynalite, ElasticMQ, moto itself; the browser tests drive Chromium)
	@$(BIN)/python -m pytest -p no:cacheprovider

test-fast: $(VENV)/.dev ## the quick tier: no Spark, no infra, no end-to-end, no browser
	@$(BIN)/python -m pytest -m "not slow and not infra and not spark and not e2e and not web and not browser"

lint: $(VENV)/.dev ## ruff
	@$(BIN)/ruff check .

typecheck: $(VENV)/.dev ## mypy over the services and the core
	@$(BIN)/mypy

# The storefront (web/): npm ci from the committed lock file when it changes, and a build when a
# source changes. The build fails when the first page's compressed JS and CSS pass 150 KB.
WEB_SOURCES := $(shell find web/src web/public web/scripts -type f 2>/dev/null) \
               web/index.html web/vite.config.ts web/tsconfig.json web/eslint.config.js

web/node_modules/.installed: web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "[make] apt-get install nodejs npm (the storefront's build)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm; }
	@echo "[make] web: installing the storefront's build tools (npm ci in web/) ..."
	@cd web && npm ci --no-audit --no-fund
	@touch $@

web/dist/index.html: web/node_modules/.installed $(WEB_SOURCES)
	@echo "[make] web: building the storefront and admin console into web/dist (vite) ..."
	@cd web && npm run build

web: web/dist/index.html ## build the storefront and admin console into web/dist (measures the first page)

schemas: $(VENV)/.run ## regenerate the committed contracts: event JSON Schemas and each service's openapi.json
	@$(BIN)/cloudshop schemas

build: $(VENV)/.dev ## build the Lambda assets under build/lambda (no Docker)
	@$(BIN)/python -m cloudshop.build

synth: build web ## synthesize every CloudFormation template into cdk.out (no Docker, no AWS)
	@$(BIN)/python app.py

bench: $(VENV)/.dev system-deps ## benchmarks; results in bench-results/
	@mkdir -p bench-results
	@$(BIN)/python -m cloudshop.bench_imports --out bench-results/lambda-imports.json
	@$(BIN)/python -m cloudshop.bench_tracing --out bench-results/tracing.json
	@$(BIN)/python -m cloudshop.bench_http --out bench-results
	@$(BIN)/python -m cloudshop.bench --out bench-results/checkout.json
	@$(BIN)/python -m analytics.bench --out bench-results/analytics.json

loadtest: $(VENV)/.dev ## HPA evidence without a cluster: replay tests/load's curve through the HPAs (bench-results/hpa-replay.png)
	@mkdir -p bench-results
	@test -x .cache/bin/kustomize || bash .ci/install-tools.sh
	@$(BIN)/python -m cloudshop.hpa_replay --from bench-results/checkout.json --out bench-results/hpa-replay.json

analytics-once: $(VENV)/.dev ## analytics: every window so far, against the running platform (`make run`)
	@$(BIN)/cloudshop analytics --once

analytics-stream: $(VENV)/.dev ## analytics: stream windows from the running platform until Ctrl-C
	@$(BIN)/cloudshop analytics

analytics-test: tools ## analytics tests only (Spark, real Kafka, moto, Terraform)
	@$(BIN)/python -m pytest tests/analytics -p no:cacheprovider

analytics-test-spark35: $(VENV)/.dev ## the analytics tests on Spark 3.5, as on Dataproc 2.2
	@test -x .venv-spark35/bin/python || $(PYTHON) -m venv .venv-spark35
	@.venv-spark35/bin/pip install -q "pyspark==3.5.7" "pandas<2.3" "numpy<2" "pyarrow<17"
	@$(BIN)/python -c "import site; print(site.getsitepackages()[0])" > "$$(.venv-spark35/bin/python -c 'import site; print(site.getsitepackages()[0])')/zz-cloudshop.pth"
	@.venv-spark35/bin/python -m pytest tests/analytics -p no:cacheprovider

analytics-package: $(VENV)/.dev ## zip the analytics job for Dataproc (dist/analytics.zip)
	@$(BIN)/python -m analytics.package dist/analytics.zip

clean: ## remove local state, caches and build output (keeps .venv and web/node_modules)
	rm -rf .cloudshop build cdk.out bench-results dist web/dist test-artifacts .pytest_cache .mypy_cache .ruff_cache
