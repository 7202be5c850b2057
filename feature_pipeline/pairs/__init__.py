"""The pair jobs: `pair_candidates` start and stop a job per candidate pair; its legs' candles, re-keyed to the
pair id and joined by event time, give its Kalman spread, z-score and half-life -> Feast (`pair_spread_1m`)."""
