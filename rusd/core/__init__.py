"""The deterministic core: pure state machines, no IO, no clocks, no randomness of its own."""
