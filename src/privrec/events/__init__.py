"""Layer 2: event schema and validation, the privacy gate (ingestion), the encrypted event store."""
