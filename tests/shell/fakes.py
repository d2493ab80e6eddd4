"""Stand-ins for the client, so the shell's logic is tested without a cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from raftkv.errors import Unavailable
from raftkv.query import ast as q
from raftkv.query import parse


class FakeResult:
    """A result whose pages come from any iterable (a generator can raise mid-stream)."""

    def __init__(self, columns: Sequence[str] = (), status: str = "SELECT",
                 pages: Iterable[list[tuple[Any, ...]]] = ()) -> None:
        self.columns = tuple(columns)
        self.status = status
        self._pages = pages
        self.closed = 0

    def pages(self) -> Iterable[list[tuple[Any, ...]]]:
        return self._pages

    def close(self) -> None:
        self.closed += 1


class FakeClient:
    """Parses each statement for real (so errors carry the real caret) and answers from a dict."""

    def __init__(self, answer: Callable[[str, Any], FakeResult] | None = None) -> None:
        self.rows: dict[int, bytes] = {}
        self.queries: list[str] = []
        self.results: list[FakeResult] = []
        self.closed = False
        self._answer = answer

    def query(self, statement: Any) -> FakeResult:
        text = statement if isinstance(statement, str) else repr(statement)
        self.queries.append(text.strip())
        parsed = parse(statement) if isinstance(statement, str) else statement
        result = self._answer(text, parsed) if self._answer else self._default(parsed)
        self.results.append(result)
        return result

    def _default(self, st: Any) -> FakeResult:
        if isinstance(st, q.Insert):
            for k, v in st.rows:
                self.rows[k.value] = v.value.encode() if isinstance(v.value, str) else v.value
            return FakeResult(status=f"INSERT {len(st.rows)}")
        if isinstance(st, q.Select):
            rows = [(k, self.rows[k]) for k in sorted(self.rows)]
            return FakeResult(("key", "value"), "SELECT", [rows] if rows else [])
        if isinstance(st, q.Get):
            k = st.key.value
            return FakeResult(("key", "value"), "GET", [[(k, self.rows[k])]] if k in self.rows else [])
        if isinstance(st, q.Delete):
            n = len(self.rows)
            self.rows.clear()
            return FakeResult(status=f"DELETE {n}")
        return FakeResult(status=type(st).__name__.upper())

    def close(self) -> None:
        self.closed = True


class Factory:
    """A client factory handing out one FakeClient, or refusing addresses listed in ``down``."""

    def __init__(self, client: FakeClient | None = None, down: Iterable[str] = ()) -> None:
        self.client = client or FakeClient()
        self.down = set(down)
        self.calls: list[tuple[str, str]] = []

    def __call__(self, seeds: str, consistency: str) -> FakeClient:
        self.calls.append((seeds, consistency))
        if seeds in self.down:
            raise Unavailable(f"cannot reach {seeds}")
        return self.client
