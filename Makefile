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
	@awk 'BEGIN {FS = ":.*## "}; /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required (set PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with pinned dependencies

up: $(STAMP) ## Start (or reuse) the local broker, Redis and MLflow server; idempotent
	$(PY) -m coinflow up

down: $(STAMP) ## Stop only the services this project started
	$(PY) -m coinflow down

status: $(STAMP) ## Show which services are up
	$(PY) -m coinflow status

feature-repo: $(STAMP) ## Register the Feast feature repository (feast apply)
	$(PY) -m feature_pipeline feature-repo

feature-pipeline: $(STAMP) ## Run the live pipeline against Kraken for PAIRS until Ctrl-C
	$(PY) -m feature_pipeline live --pairs $(PAIRS)

pairs-orchestrate: $(STAMP) ## Publish pair_candidates (rolling discovery over the universe candles) until Ctrl-C
	$(PY) -m feature_pipeline pairs-orchestrate

pairs-live: $(STAMP) ## Run the pair jobs (pair_candidates -> pair_spread_1m) over the topics until Ctrl-C
	$(PY) -m feature_pipeline pairs-live

replay: $(STAMP) ## Replay the bundled real Kraken BTC/USD trades through the pipeline
	$(PY) -m feature_pipeline replay-trades $(DATA)/btcusd_trades_2019-07-01T00.csv --pair BTC/USD

backfill: $(STAMP) ## Backfill the bundled Kraken OHLCVT candles (BTC/USDC 1m, BTC/USD 5m)
	$(PY) -m feature_pipeline backfill-ohlcv $(DATA)/ohlcvt_XBTUSDC_1m_2023Q1.csv --pair BTC/USDC --interval 1m
	$(PY) -m feature_pipeline backfill-ohlcv $(DATA)/ohlcvt_XBTUSD_5m_2023Q1.csv --pair BTC/USD --interval 5m

quickstart: $(STAMP) ## Install, then run all three pipelines on bundled real data: features, training, API, one prediction (QUICK=1: shorter training)
	$(PY) -m coinflow quickstart $(if $(QUICK),--quick,)

replay-session: $(STAMP) ## Replay the recorded Coinbase ETH-USD session through the order-book pipeline (book states to .coinflow/books.parquet)
	$(PY) -m feature_pipeline replay-session data/coinbase/advanced_trade_ETH-USD_2026-08-09.jsonl.gz --book-out .coinflow/books.parquet

replay-snapshots: $(STAMP) ## Replay the bundled 13.9 h of Coinbase BTC-USD L2 snapshots through the order-book pipeline (about 40 s)
	$(PY) -m feature_pipeline replay-snapshots data/coinbase/l2_snapshots_BTC-USD_2020-04-11.csv.gz --product coinbase:BTC-USD

paper-trade-action: $(STAMP) ## The action model on 13.9 h of real BTC-USD books: replay them, train, paper-trade its test period (about 2 min)
	$(PY) -m feature_pipeline replay-snapshots data/coinbase/l2_snapshots_BTC-USD_2020-04-11.csv.gz --product coinbase:BTC-USD
	$(PY) -m training_pipeline train --models action --product coinbase:BTC-USD
	$(PY) -m inference_pipeline backtest --strategy action --product coinbase:BTC-USD --model-alias challenger --book-file data/coinbase/l2_snapshots_BTC-USD_2020-04-11.csv.gz

trade: $(STAMP) ## Paper-trade the action champion of BOOK (default coinbase:BTC-USD) over the live book topics until Ctrl-C
	$(PY) -m inference_pipeline trade --strategy action --product $(or $(BOOK),coinbase:BTC-USD)

positions: $(STAMP) ## Balances, positions and the kill switch of the trading account
	$(PY) -m inference_pipeline positions

live-books: $(STAMP) ## Stream live Coinbase L2 books and trades (COINFLOW_COINBASE_PRODUCTS) until Ctrl-C
	$(PY) -m feature_pipeline live-books --exchange coinbase

train: $(STAMP) ## Train baselines, Lasso and XGBoost for COINFLOW_TRAINING_PAIRS (H=1), log to MLflow, promote a champion
	$(PY) -m training_pipeline train

mlflow-ui: $(STAMP) ## Start (or reuse) the MLflow tracking server and UI on http://127.0.0.1:5000 (make down stops it)
	$(PY) -m training_pipeline mlflow-ui

train-deep: $(STAMP) ## Train the LSTM and GRU sequence models for COINFLOW_TRAINING_PAIRS (CPU: about 30 s per epoch per model here)
	$(PY) -m training_pipeline train --models lstm,gru

train-action: $(STAMP) ## Train the order-book action model for COINFLOW_ACTION_PRODUCTS (needs recorded books: make live-books)
	$(PY) -m training_pipeline train --models action

pairs-backtest: $(STAMP) ## Walk-forward pairs backtest over the offline store's universe: make pairs-backtest INTERVAL=1m|5m
	$(PY) -m training_pipeline pairs-backtest --interval $(or $(INTERVAL),1m)

simulate: $(STAMP) ## Simulate trading with a logged model on its test period: make simulate RUN_ID=<mlflow run id>
	$(PY) -m training_pipeline simulate --run-id $(RUN_ID)

tensorboard: $(STAMP) ## TensorBoard over the deep models' training logs
	$(PY) -m tensorboard.main --logdir .coinflow/tensorboard --host 127.0.0.1

serve: $(STAMP) ## Serve the champion's predictions on http://127.0.0.1:8000 (/docs, /metrics) until Ctrl-C
	$(PY) -m inference_pipeline serve --host 127.0.0.1 --port 8000

predict-stream: $(STAMP) ## Predict every candle of the features topic -> predictions topic + offline store, until Ctrl-C
	$(PY) -m inference_pipeline predict-stream --metrics-port 9109

evaluate-live: $(STAMP) ## Live MAE and directional accuracy of streamed predictions -> MLflow + Prometheus, until Ctrl-C
	$(PY) -m inference_pipeline evaluate-live --metrics-port 9110

test: $(STAMP) ## Run all tests (unit, then integration against a real broker, Redis, Feast and MLflow)
	$(PY) -m pytest tests -m "not e2e"

test-e2e: $(STAMP) ## Check what the quickstart left (model, features, prediction) and run every notebook
	$(PY) -m pytest tests/e2e -m e2e

lint: $(STAMP) ## Lint and check the formatting (ruff); `make format` fixes what it can
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## Format the tree and apply ruff's safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: $(STAMP) ## Type-check the packages (mypy, configured in pyproject.toml)
	$(VENV)/bin/mypy

test-unit: $(STAMP) ## Run the unit tests only (no services)
	$(PY) -m pytest tests/unit

bench: $(STAMP) ## Run the benchmarks (prints tables with the machine)
	$(PY) -m bench.bench_feature_pipeline
	$(PY) -m bench.bench_order_book
	$(PY) -m bench.bench_pit_retrieval
	$(PY) -m bench.bench_deep
	$(PY) -m bench.bench_inference
	$(PY) -m bench.bench_trading
	$(PY) -m bench.bench_universe
	$(PY) -m bench.bench_pairs_discovery
	$(PY) -m bench.bench_pairs_orchestrator

clean: down ## Stop services and remove local state (.coinflow, offline store, registry)
	rm -rf .coinflow feature_repo/data

.PHONY: help install lint format typecheck up down status feature-repo feature-pipeline pairs-orchestrate pairs-live pairs-backtest replay backfill replay-session replay-snapshots paper-trade-action trade positions live-books train mlflow-ui train-deep train-action simulate tensorboard serve predict-stream evaluate-live quickstart test test-unit test-e2e bench clean
