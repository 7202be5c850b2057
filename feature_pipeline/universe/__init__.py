"""The universe pipeline: candles of a universe of tickers -> per-ticker features (log return, volatility, Hurst)
-> Feast (`universe_1m`, `universe_5m`)."""
