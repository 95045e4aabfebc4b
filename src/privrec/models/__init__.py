"""Layer 4: the Recommender contract and one module per model."""
