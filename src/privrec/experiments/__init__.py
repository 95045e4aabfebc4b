"""Layer 6: A/B tests (assignment, outcome attribution, statistics)."""
