"""ORDER BY a value of the row with LIMIT (a bounded top-N) against a real cluster, compared with a
Python model of the documented order over the same rows: rows on several shards, ASC and DESC,
OFFSET, missing fields, JSON null, values that are not JSON, numbers mixed with strings and
booleans, ties (broken by key ascending), a predicate pushed to the shards; and the errors."""

import json
import random

import pytest

from raftkv import Client, errors
from raftkv.keys import MAX_KEY

from ..query.query_reference import model_order

pytestmark = pytest.mark.timeout(180)

SHARDS = 4
STEP = (MAX_KEY + 1) // SHARDS  # the launcher splits the key space evenly
BASES = (1000, STEP + 1000, 3 * STEP + 1000)  # shards s0000, s0001 and s0003
MISSING = object()


def _temp(rng: random.Random) -> object:
    """A reading: mostly numbers with many ties, some strings, booleans, null, or none at all."""
    return rng.choice([rng.randrange(-5, 40), rng.randrange(-5, 40), 21, 21.0, 18.5, "hot", "21", "", True,
                       False, None, MISSING, MISSING])


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from .conftest import RunningCluster

    c = RunningCluster(str(tmp_path_factory.mktemp("topn") / "cluster"), shards=SHARDS)
    rng = random.Random(11)
    model: dict[int, bytes] = {}
    for base in BASES:
        for i in range(150):
            t = _temp(rng)
            doc = {"site": f"s{i % 3}"} | ({} if t is MISSING else {"temp": t})
            model[base + i * 3] = json.dumps(doc).encode() if rng.random() > 0.05 else b"\xffnot json"
    try:
        with Client(c.seeds) as db:
            assert db.put_many(model) == len(model)
        yield c, model
    finally:
        c.close()


def _field(v: bytes, name: str) -> object:
    """The model of value->'name': None when missing, JSON null, or the value is not JSON."""
    try:
        doc = json.loads(v)
    except ValueError:
        return None
    return doc.get(name)


def _text(x: object) -> object:
    """The model of ->>: a string as it is, anything else as its JSON text, NULL as NULL."""
    return x if x is None or isinstance(x, str) else json.dumps(x)


@pytest.mark.parametrize("direction", ["ASC", "DESC"])
def test_top_n_by_a_json_field_matches_the_model(loaded, direction):
    c, model = loaded
    temps = {k: _field(v, "temp") for k, v in model.items()}
    with Client(c.seeds) as db:
        for limit, offset in [(10, 0), (7, 5), (1, 0), (1000, 0), (25, 440)]:
            text = f"SELECT key, value->'temp' AS t FROM kv ORDER BY t {direction} LIMIT {limit} OFFSET {offset}"
            got = list(db.query(text))
            keys = model_order(list(temps.items()), direction == "DESC")[offset:offset + limit]
            assert got == [(k, temps[k]) for k in keys], text
        # NULLs are last ascending and first descending, as in PostgreSQL
        first = list(db.query(f"SELECT value->'temp' FROM kv ORDER BY value->'temp' {direction} LIMIT 1"))
        assert (first == [(None,)]) == (direction == "DESC")


def test_top_n_with_a_predicate_arithmetic_and_text(loaded):
    c, model = loaded
    # three shards, cut at both ends; s0002 (empty) pruned
    low, mid, high = BASES[0] + 30, BASES[1] + 200, BASES[2] + 300
    where = f"(key BETWEEN {low} AND {mid} OR key BETWEEN {BASES[2]} AND {high}) AND value->>'site' != 's1'"
    # != is false for NULL (a value that is not JSON), as every comparison with NULL
    matched = {k: v for k, v in model.items() if (low <= k <= mid or BASES[2] <= k <= high)
               and _field(v, "site") not in (None, "s1")}
    with Client(c.seeds) as db:
        text = f"SELECT key, value->'temp' * 2 AS d FROM kv WHERE {where} ORDER BY d DESC LIMIT 12 OFFSET 3"
        doubled = {k: (t * 2 if isinstance(t := _field(v, "temp"), (int, float)) and not isinstance(t, bool)
                       else None) for k, v in matched.items()}
        keys = model_order(list(doubled.items()), True)[3:15]
        assert list(db.query(text)) == [(k, doubled[k]) for k in keys]
        lines = [line for (line,) in db.query("EXPLAIN " + text)]
        assert "  filter on shards: value->>'site' != 's1'" in lines
        assert any(line.startswith("  order: d descending, ties by key ascending; top 15 rows kept on the client")
                   for line in lines)
        assert "  limit: 12 in total" in lines and not any("per shard" in line for line in lines)
        assert any(line.startswith("  shards: 3 of 4 (1 pruned)") for line in lines)

        # ->> orders text: numbers and booleans by their JSON text, among the strings
        texts = {k: _text(_field(v, "temp")) for k, v in model.items()}
        got = list(db.query("SELECT key, value->>'temp' FROM kv ORDER BY value->>'temp' LIMIT 40"))
        assert got == [(k, texts[k]) for k in model_order(list(texts.items()), False)[:40]]

        # the whole value (bytes), with the ties among identical values broken by key
        got = list(db.query("SELECT key FROM kv ORDER BY value DESC LIMIT 30"))
        assert got == [(k,) for k in model_order(list(model.items()), True)[:30]]


def test_top_n_errors(loaded):
    c, _ = loaded
    with Client(c.seeds) as db:
        for text, fragment in [
            ("SELECT key FROM kv ORDER BY value->'temp' DESC", "needs a LIMIT"),
            ("SELECT key FROM kv ORDER BY value->'temp' LIMIT 100001", "the most is 100,000"),
            ("SELECT key FROM kv ORDER BY value->'temp' LIMIT 99990 OFFSET 11", "LIMIT + OFFSET = 100,001"),
            ("SELECT key FROM kv ORDER BY value->>'site' + 1 LIMIT 5", "arithmetic needs numbers"),
        ]:
            with pytest.raises(errors.QueryError) as e:
                db.query(text)
            assert fragment in str(e.value), text
