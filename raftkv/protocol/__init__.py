"""The client wire protocol: length-prefixed msgpack frames (sans-IO)."""
