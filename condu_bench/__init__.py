"""condu-bench: a benchmark harness for continual learning of CLIP-like vision-language models.

Importing the package is deliberately cheap: torch, open_clip and avalanche are only imported by the
submodules that need them, so ``condu-bench --help`` and ``condu-bench ls`` stay fast.
"""

__version__ = "0.1.0"
