"""Scan cursors and their read-ahead pages (server/cursors.py), on a real LevelDB store."""

import pytest

from raftkv.errors import CursorExpired
from raftkv.server.cursors import Cursors
from raftkv.storage.leveldb import ShardStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def store(tmp_path):
    s = ShardStore(str(tmp_path / "store"))
    s.apply(1, puts=[(k, b"v%d" % k) for k in range(100)])
    yield s
    s.close()


def read(start, end):
    return lambda view: view.scan_raw(start, end, limit=10)


def test_the_page_read_ahead_answers_exactly_its_request(store):
    cursors = Cursors("n1")
    view = store.open_view()
    first = view.scan_raw(0, 100, limit=10)
    cursor = cursors.keep("s1", view, now=0.0)
    nxt = (first[2], 100, False, 10)
    cursors.read_ahead(cursor, nxt, read(first[2], 100))
    assert cursors.ahead_bytes > 0
    store.apply(2, puts=[(15, b"changed")])  # later writes: the cursor's snapshot does not see them
    got_view, page = cursors.take(cursor, "s1", nxt)
    assert got_view is view and page == view.scan_raw(10, 100, limit=10) and b"changed" not in page[1]
    assert cursors.ahead_bytes == 0 and cursors.ahead_pages == {"used": 1, "unused": 0}

    # another request on the next cursor (say a smaller page): the page is dropped, the view still given
    cursor = cursors.keep("s1", view, now=0.0)
    cursors.read_ahead(cursor, (20, 100, False, 10), read(20, 100))
    got_view, page = cursors.take(cursor, "s1", (20, 100, False, 5))
    assert got_view is view and page is None
    assert cursors.ahead_bytes == 0 and cursors.ahead_pages == {"used": 1, "unused": 1}
    view.close()


def test_cursors_are_bounded_in_number_and_idle_time_and_checked(store):
    cursors = Cursors("n1", max_cursors=2)
    views = [store.open_view() for _ in range(3)]
    kept = []
    for i, v in enumerate(views):
        kept.append(cursors.keep("s1", v, now=float(i)))
        cursors.read_ahead(kept[-1], (0, 100, False, 10), read(0, 100))
    assert len(cursors) == 2 and views[0].closed  # the oldest went, and its page with it
    assert cursors.ahead_pages["unused"] == 1
    with pytest.raises(CursorExpired):
        cursors.take(kept[0], "s1")
    with pytest.raises(CursorExpired):
        cursors.take(kept[1], "s2")  # another shard's cursor: refused, and closed
    assert views[1].closed and len(cursors) == 1
    with pytest.raises(CursorExpired):
        cursors.take(["n2", kept[2][1]], "s1")  # another node's
    cursors.expire(cutoff=5.0)
    assert len(cursors) == 0 and views[2].closed and cursors.ahead_bytes == 0
    assert cursors.ahead_pages == {"used": 0, "unused": 3}


def test_read_ahead_stays_within_its_byte_budget(store):
    cursors = Cursors("n1", read_ahead_bytes=1)
    view = store.open_view()
    a, b = cursors.keep("s1", view, now=0.0), cursors.keep("s1", view, now=0.0)
    cursors.read_ahead(a, (0, 100, False, 10), read(0, 100))
    cursors.read_ahead(b, (0, 100, False, 10), read(0, 100))  # over budget: not read
    assert cursors.take(b, "s1", (0, 100, False, 10))[1] is None
    assert cursors.take(a, "s1", (0, 100, False, 10))[1] is not None
    view.close()
