"""Leaderboard sweeps: sweep files expanded into runs (spec), one run function (worker), executors (local, Ray,
SLURM), and the driver that skips, dispatches, shows progress and summarises."""
