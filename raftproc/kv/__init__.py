"""The replicated key-value state machine (deterministic, no IO)."""
