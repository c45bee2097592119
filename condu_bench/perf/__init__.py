"""``condu-bench bench``: the harness's speed targets as ratios measured side by side in one process."""
