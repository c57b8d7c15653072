"""Continual test-time-adaptation scenarios: one stream through many splits, no reset."""
