"""The node process: Raft groups plus the asyncio client server."""
