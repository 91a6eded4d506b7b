"""Implementations of the core's storage Protocols: memory (reference) and LMDB."""
