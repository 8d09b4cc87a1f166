# Everything a fresh machine needs is installed by these targets themselves:
# uv (pinned, into .tools/), the locked Python dependencies (into .venv/), and
# the control plane and helm + kstatus (built from the Go module proxy, cached
# outside the repo).

PYTHON ?= python3
UV_VERSION := 0.13.8
UV := .tools/bin/uv
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: help install controlplane gotools bench bench-planning bench-packing bench-writes kill-run chaos test test-unit test-e2e lint typecheck fmt crds cluster demo sandbox clean

help:
	@echo "make demo     run the operator end to end: local control plane + sandbox Mixpanel + sample requests"
	@echo "              (on an existing cluster: make demo DEMO_ARGS=\"--context NAME\")"
	@echo "make test     lint, type-check and run every test (builds the control plane on first use)"
	@echo "make cluster  a local kube-apiserver + etcd with the CRDs installed, until Ctrl-C"
	@echo "make sandbox  the Mixpanel sandbox alone"
	@echo "make crds     regenerate crds/ from the pydantic models"
	@echo "make gotools  build helm and kstatus for the chart and GitOps tests (cached, once per machine)"
	@echo "make chaos    reliability run: 1,000 requests through 20 kill -9, API server and etcd restarts,"
	@echo "              a faulty Mixpanel, two replicas; writes docs/reliability.md (CHAOS_ARGS=\"--seed 3 --n 500 --kills 10\")"

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --extra dev --quiet
	touch $@

install: $(VENV)/.installed

controlplane: install
	$(PY) -m mixpanel_dsr.localcluster build

# helm and kstatus for the chart and GitOps tests (gotools/; about 2 minutes cold).
gotools: install
	$(PY) -m mixpanel_dsr.localcluster tools

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/deptry operator

typecheck: install
	$(VENV)/bin/mypy

test: lint typecheck controlplane gotools
	$(VENV)/bin/pytest

test-unit: install
	$(VENV)/bin/pytest -m "not e2e"

test-e2e: controlplane gotools
	$(VENV)/bin/pytest -m e2e

fmt: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

crds: install
	$(PY) -m mixpanel_dsr.api.generate --out crds --docs docs/api.md

cluster: controlplane
	$(PY) -m mixpanel_dsr.localcluster run

sandbox: install
	$(VENV)/bin/mixpanel-sandbox

# Against an existing cluster instead of a local control plane:
# make demo DEMO_ARGS="--context kind-dev"
demo: controlplane
	$(PY) -m mixpanel_dsr.demo $(DEMO_ARGS)

clean:
	rm -rf .venv .tools .local .mypy_cache .ruff_cache .pytest_cache

# Production scale beside a naive baseline: (a) 10,000 one-id deletions, (b) one of 100,000 ids
# from a Secret, (d) a restart with 10,000 finished and 1,000 in flight (about 15 minutes).
# Arguments in BENCH_ARGS, e.g. make bench BENCH_ARGS="--workloads a,d --n 2000".
bench: controlplane
	$(PY) -m benchmarks.bench_scale $(BENCH_ARGS)

bench-planning: install
	$(PY) -m benchmarks.bench_planning

bench-packing: controlplane
	$(PY) -m benchmarks.bench_packing

# Kubernetes API writes per request, the work tree's engine against engine v1 (8f63f54);
# arguments in BENCH_ARGS, e.g. make bench-writes BENCH_ARGS="1000 --engine-ref HEAD~3".
bench-writes: controlplane
	$(PY) -m benchmarks.bench_writes $(BENCH_ARGS)

# One-id deletions through seeded kill -9 of the operator: every request Succeeded, no id
# lost, ids sent twice within the creates a kill interrupted; exits non-zero otherwise.
# Arguments in BENCH_ARGS, e.g. make kill-run BENCH_ARGS="--requests 2000 --kills 40 --seed 3".
kill-run: controlplane
	$(PY) -m benchmarks.kill_run $(BENCH_ARGS)

# The reliability run (docs/reliability.md): 1,000 requests across three projects and both
# types through 20 seeded kill -9 of the operator, a restart of kube-apiserver and of etcd and
# ~20% sandbox faults, then two replicas handing over; checks the end state, exits non-zero
# when an invariant fails, and writes the figures to docs/reliability.md (about 15 minutes).
# Arguments in CHAOS_ARGS: --seed N, --n REQUESTS, --kills N, --no-handover, --keep.
chaos: controlplane
	$(PY) -m benchmarks.chaos --write-docs docs/reliability.md $(CHAOS_ARGS)
