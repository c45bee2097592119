"""The one training and evaluation loop every method shares."""
