# Neurocyte: `make demo`, `make test`. Needs only python3 (>= 3.11) and make;
# uv is bootstrapped from PyPI when missing and installs the locked environment.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen
DEMO_DIR := $(CURDIR)/demo
DEMO_ENV := NEUROCYTE_LAKE=$(DEMO_DIR)/lake NEUROCYTE_LANDING=$(DEMO_DIR)/landing \
	AIRFLOW_HOME=$(DEMO_DIR)/airflow

.PHONY: help uv sync demo test test-slow test-all system-deps lint format bench airflow clean

help:
	@echo "make demo       generate recordings, run the ingest DAG, query the catalog"
	@echo "make test       the default test suite (real Airflow, Delta, GX, DuckDB)"
	@echo "make test-slow  the slow integration tests only"
	@echo "make lint       ruff (lint + format check), mypy, import-linter layers"
	@echo "make bench      benchmarks, with figures and ratios to baselines"
	@echo "make airflow    airflow standalone with the project's DAGs (UI on :8080; AIRFLOW_PORT=...)"

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet --disable-pip-version-check uv

# Bytecode is compiled once at install: with PYTHONDONTWRITEBYTECODE set (as on the
# development machine) every Python process would otherwise recompile Airflow, GX, pandas.
sync: uv
	@$(UV) sync --frozen --quiet --compile-bytecode

demo: sync
	rm -rf $(DEMO_DIR)
	$(DEMO_ENV) $(RUN) neurocyte demo-data
	$(DEMO_ENV) $(RUN) python scripts/run_dag.py neurocyte_ingest --conf '{"settle_s": 0, "max_wait_s": 0}'
	@echo
	@echo "== published icephys_sweeps (first rows) =="
	@$(DEMO_ENV) $(RUN) neurocyte sql "SELECT r.cell_id, s.condition, s.timepoint, s.sweep_number, \
		s.stim_amp_pa, round(s.v_baseline_mv, 1) AS v_baseline_mv, s.spike_count \
		FROM icephys_sweeps s JOIN icephys_recordings r USING (file_id) \
		ORDER BY r.cell_id, s.sweep_number LIMIT 14"
	@echo "== spikes at +160 pA by condition and age (KO cells are hyperexcitable) =="
	@$(DEMO_ENV) $(RUN) neurocyte sql "SELECT condition, timepoint, count(*) AS sweeps, \
		round(avg(spike_count), 1) AS mean_spikes FROM icephys_sweeps WHERE stim_amp_pa = 160 \
		GROUP BY ALL ORDER BY ALL"
	@echo "== ingest_log =="
	@$(DEMO_ENV) $(RUN) neurocyte sql "SELECT file_name, status, left(coalesce(reason, ''), 90) AS reason \
		FROM ingest_log ORDER BY file_name"
	@echo
	@echo "catalog:  $(DEMO_DIR)/lake/catalog.duckdb   (duckdb -readonly $(DEMO_DIR)/lake/catalog.duckdb)"
	@echo "QC reports: $(DEMO_DIR)/lake/qc/reports/index.html   (offline; GX Data Docs in qc/docs)"

test: sync
	$(RUN) pytest

# System packages the slow integration tests need (Debian chromium for the browser
# test; PostgreSQL and Redis for the Celery end-to-end test). Idempotent.
system-deps:
	bash scripts/install_browser.sh
	bash scripts/ci_services.sh

test-slow: sync system-deps
	$(RUN) pytest -m slow

test-all: sync system-deps
	$(RUN) pytest -m "slow or not slow"

lint: sync
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	PYTHONPATH=dags $(RUN) lint-imports

format: sync
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

bench: sync system-deps
	@$(UV) sync --frozen --quiet --compile-bytecode --group bench  # spikeinterface: a reference
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(RUN) --group bench python $$b || exit 1; done

# `make airflow [AIRFLOW_PORT=8081] [AIRFLOW_ALL_ADMINS=True]`: the execution API URL is
# derived from the port (tasks reach the api-server there; a port change alone breaks every
# task), the DAGs start unpaused, LocalExecutor workers = CPU cores (not 32), and the
# simple auth manager has named users with roles (passwords printed at start and kept in
# airflow_home/simple_auth_manager_passwords.json.generated); all-admins only when asked.
AIRFLOW_PORT ?= 8080
AIRFLOW_PARALLELISM ?= $(shell nproc 2>/dev/null || echo 2)
AIRFLOW_USERS ?= admin:admin,curator:op,viewer:viewer
AIRFLOW_ALL_ADMINS ?= False
airflow: sync
	NEUROCYTE_LAKE=$${NEUROCYTE_LAKE:-$(CURDIR)/lake} NEUROCYTE_LANDING=$${NEUROCYTE_LANDING:-$(CURDIR)/landing} \
	AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	AIRFLOW__API__BASE_URL=http://localhost:$(AIRFLOW_PORT) \
	AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:$(AIRFLOW_PORT)/execution/ \
	AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False \
	AIRFLOW__CORE__PARALLELISM=$(AIRFLOW_PARALLELISM) \
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=$(AIRFLOW_USERS) \
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=$(AIRFLOW_ALL_ADMINS) \
	AIRFLOW_HOME=$(CURDIR)/airflow_home AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__PLUGINS_FOLDER=$(CURDIR)/plugins AIRFLOW__CORE__LOAD_EXAMPLES=False \
	$(RUN) airflow standalone

clean:
	rm -rf $(DEMO_DIR) airflow_home .pytest_cache .ruff_cache .mypy_cache
