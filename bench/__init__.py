"""Benchmarks of the coinflow pipelines (run as modules, e.g. `python -m bench.bench_feature_pipeline`)."""
