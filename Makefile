# coinflow: real-time ML for crypto markets. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)
PAIRS ?= BTC/USD,ETH/USD
DATA := data/kraken

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "}; /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required (set PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with pinned dependencies

up: $(STAMP) ## Start (or reuse) the local broker and Redis; idempotent
	$(PY) -m coinflow up

down: $(STAMP) ## Stop only the services this project started
	$(PY) -m coinflow down

status: $(STAMP) ## Show which services are up
	$(PY) -m coinflow status

feature-repo: $(STAMP) ## Register the Feast feature repository (feast apply)
	$(PY) -m feature_pipeline feature-repo

feature-pipeline: $(STAMP) ## Run the live pipeline against Kraken for PAIRS until Ctrl-C
	$(PY) -m feature_pipeline live --pairs $(PAIRS)

replay: $(STAMP) ## Replay the bundled real Kraken BTC/USD trades through the pipeline
	$(PY) -m feature_pipeline replay-trades $(DATA)/btcusd_trades_2019-07-01T00.csv --pair BTC/USD

backfill: $(STAMP) ## Backfill the bundled Kraken OHLCVT candles (BTC/USDC 1m, BTC/USD 5m)
	$(PY) -m feature_pipeline backfill-ohlcv $(DATA)/ohlcvt_XBTUSDC_1m_2023Q1.csv --pair BTC/USDC --interval 1m
	$(PY) -m feature_pipeline backfill-ohlcv $(DATA)/ohlcvt_XBTUSD_5m_2023Q1.csv --pair BTC/USD --interval 5m

quickstart: up feature-repo backfill replay ## Install, start services, fill the feature store from bundled real data, show features
	$(PY) -m feature_pipeline online-features --pairs BTC/USD,BTC/USDC

test: $(STAMP) ## Run all tests (unit, then integration against a real broker, Redis and Feast)
	$(PY) -m pytest tests

test-unit: $(STAMP) ## Run the unit tests only (no services)
	$(PY) -m pytest tests/unit

bench: $(STAMP) ## Run the benchmarks (prints tables with the machine)
	$(PY) -m bench.bench_feature_pipeline

clean: down ## Stop services and remove local state (.coinflow, offline store, registry)
	rm -rf .coinflow feature_repo/data

.PHONY: help install up down status feature-repo feature-pipeline replay backfill quickstart test test-unit bench clean
