"""The candle pipeline: trades -> OHLCV candles -> indicators -> Feast (and the features topic)."""
