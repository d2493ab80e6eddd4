"""The Python client: :class:`Client` (sync, thread-safe) and :class:`AsyncClient` (asyncio)."""
