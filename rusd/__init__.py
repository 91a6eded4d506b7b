"""rusd: an etcd v3 compatible key-value store built simulation-first."""

__version__ = "0.1.0"
