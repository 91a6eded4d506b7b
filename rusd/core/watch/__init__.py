"""Watches: streams of watchers fed by applied events, caught up from history."""
