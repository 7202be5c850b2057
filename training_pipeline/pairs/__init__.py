"""Pairs trading: pair discovery (clusters of tickers, cointegration within them) and the rolling re-tests that
turn discovery results into `pair_candidates` events."""
