"""Published numbers; installed as the data package ``condu_bench.published`` (see condu_bench/resources.py)."""
