"""Layer 1: pseudonymisation and key handling, DP mechanisms, budget ledger, consent, audit log.

Pure and small on purpose: nothing here imports events, data or models, so it can be audited alone.
"""
