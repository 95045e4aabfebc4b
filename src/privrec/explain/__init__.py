"""Layer 5: explanations from the user's own history and public item data."""
