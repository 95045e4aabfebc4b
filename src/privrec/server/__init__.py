"""Layer 8: the HTTP API and web pages."""
