"""Storage: one LevelDB state machine per shard replica (the only plyvel user)."""
