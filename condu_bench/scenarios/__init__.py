"""Scenario builders: registry name -> function(options, seed, data_root) -> Scenario."""
