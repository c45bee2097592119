"""Method plugins, one file each. Installed as ``condu_bench.baselines`` (never a top-level ``baselines``)."""
