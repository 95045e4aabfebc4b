"""Layer 0: shared types, errors, settings and seeded randomness."""
