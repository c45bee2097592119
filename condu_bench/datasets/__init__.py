"""Real datasets: registry entries, layouts, few-shot draws, data check.

- ``spec``: DatasetSpec / LayoutSpec / Listing / DataLayoutError (no torch, no PIL).
- ``catalog``: the built-in specs, the ``DATASETS`` registry (re-exported by ``condu_bench.registries``),
  ``get_spec(name_or_alias)``.
- ``classnames/*.json``: class names and prompt templates per dataset (data, with their sources).
- ``loading``: ``load_listing(spec, root, layout)``; ``zscl_layout`` / ``coop_layout``: the readers.
- ``images``: ImageListDataset / ArrayImageDataset; ``fewshot``: cached K-shot draws; ``base_novel``; ``check``.

Kept import-free so that listing the registry stays cheap.
"""
