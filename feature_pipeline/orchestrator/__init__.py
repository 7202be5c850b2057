"""The pairs orchestrator: the universe's candles -> rolling discovery (event time) -> `pair_candidates`, the
records that start and stop the pair jobs."""
