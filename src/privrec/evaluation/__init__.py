"""Layer 6: metrics, protocols, cross-validation, reports, privacy and robustness audits."""
