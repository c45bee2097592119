"""Reporting: accuracy-matrix files, plots, leaderboards and paper-layout tables built from run results."""
