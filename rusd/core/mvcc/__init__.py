"""Multi-version KV store: revisions, generations, ranges, txns and compaction."""
