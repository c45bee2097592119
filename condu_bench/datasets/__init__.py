"""Real datasets: registry entries, layouts, few-shot draws, data check."""
