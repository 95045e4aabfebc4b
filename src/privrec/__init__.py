"""privrec: privacy-preserving recommendations for e-commerce, with utility and privacy both measured."""

__version__ = "0.1.0"
