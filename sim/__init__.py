"""The deterministic cluster simulator (rusd-sim)."""
