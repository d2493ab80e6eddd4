"""Routing: which shard owns a key, where its replicas live (pure, no I/O)."""
