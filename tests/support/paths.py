"""Where the repository's files the tests read live (the bundled real data, the feature repository), and a copy
of the feature repository for tests that must not touch the real one."""

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
FEATURE_REPO = ROOT / "feature_repo"
KRAKEN_TRADES_CSV = DATA / "kraken" / "btcusd_trades_2019-07-01T00.csv"
KRAKEN_CANDLES_CSV = DATA / "kraken" / "ohlcvt_XBTUSDC_1m_2023Q1.csv"
COINBASE_SESSION = DATA / "coinbase" / "advanced_trade_ETH-USD_2026-08-09.jsonl.gz"
COINBASE_SNAPSHOTS = DATA / "coinbase" / "l2_snapshots_BTC-USD_2020-04-11.csv.gz"
FEATURE_REPO_FILES = ("definitions.py", "names.py", "feature_store.yaml", ".feastignore")


def copy_feature_repo(parent: Path) -> Path:
    """`parent`/feature_repo: the committed definitions and yaml, without the real repository's data."""
    repo = parent / "feature_repo"
    repo.mkdir()
    for name in FEATURE_REPO_FILES:
        shutil.copy(FEATURE_REPO / name, repo / name)
    return repo


# The shared real data beside the checkout (see its README): Binance candles of a universe of USDT pairs.
SHARED_DATA = ROOT.parent / "shared" / "data"
BINANCE_1M = SHARED_DATA / "binance" / "1m_2021-05-15_2021-06-05"
BINANCE_5M = SHARED_DATA / "binance" / "5m_2024-12-31_2026-02-19"
