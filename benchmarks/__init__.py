"""Benchmark YAML files; installed as the data package ``condu_bench.benchmarks`` (see condu_bench/resources.py)."""
