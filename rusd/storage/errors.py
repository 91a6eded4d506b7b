"""Errors of the storage layer."""

from __future__ import annotations


class StorageError(Exception):
    """The data directory cannot be used (corrupt, foreign, wrong version) or a write failed.

    The message is one line and names the path, so an operator can act on it without
    a traceback from the LMDB binding.
    """
