"""Compiled filters and expressions against a naive reference interpreter; hostile wire input."""

import json
import random
import time

import msgpack
import pytest

from raftkv.errors import QueryError
from raftkv.query import predicate
from raftkv.query.like import compile_like
from raftkv.query.predicate import compile_expr, compile_exprs, compile_filter

from .query_reference import OPS, is_number, ref, ref_operand

pytestmark = pytest.mark.timeout(60)

# --- generated rows and filters --------------------------------------------------------------------

FIELD_VALUES = [0, 1, 29, 30, 30.0, 30.5, -2, 10**18, "30", "a7", "b2", "", True, False, None, [1, 2], {"x": 1}]


def make_rows(rnd: random.Random, n: int) -> list[tuple[int, bytes]]:
    rows = []
    for _ in range(n):
        key = rnd.choice([0, 1, 2, 5, 29, 30, 31, 2**63, 2**64 - 1, rnd.randint(0, 100)])
        shape = rnd.random()
        if shape < 0.75:
            doc = {}
            for name in ("temp", "dev", "ok"):
                if rnd.random() < 0.8:
                    doc[name] = rnd.choice(FIELD_VALUES)
            if rnd.random() < 0.5:
                doc["a"] = {"b": [rnd.choice(FIELD_VALUES), "x", None]}
            value = json.dumps(doc).encode()
        else:
            value = rnd.choice([b"not json", b"\xff\xfe\x00", b"", b"[1, 2", b'{"temp": NaN}', b"31",
                                b'[5, "a7", true]', b"abc%_x", "h\u00e9llo".encode(), b'"a7"', b"null"])
        rows.append((key, value))
    return rows


JSON_OPERANDS = [["json", ["temp"]], ["json", ["dev"]], ["json", ["ok"]], ["json", ["a", "b", 0]],
                 ["json", [0]], ["json", [1]], ["json", ["missing"]]]
NUM_CONSTS = [0, 1, 29, 30, 30.0, 30.5, -1, 10**18, 2**64 - 1]
STR_CONSTS = ["30", "a7", "b", "", "a"]


def gen_number(rnd: random.Random, depth: int):
    r = rnd.random()
    if depth > 1 or r < 0.3:
        return rnd.choice([["key"], ["len"], *JSON_OPERANDS[:4]])
    if r < 0.4:
        return rnd.choice(NUM_CONSTS)
    if r < 0.5:
        return ["neg", gen_number(rnd, depth + 1)]
    return [rnd.choice("+-*/"), gen_number(rnd, depth + 1), gen_number(rnd, depth + 1)]


def gen_atom(rnd: random.Random):
    op = rnd.choice(list(OPS))
    r = rnd.random()
    if r < 0.15:
        return ["cmp", op, ["key"], rnd.choice(NUM_CONSTS)]
    if r < 0.3:
        return ["cmp", op, rnd.choice(JSON_OPERANDS), rnd.choice(NUM_CONSTS + STR_CONSTS)]
    if r < 0.35:
        return ["cmp", rnd.choice(["=", "!="]), rnd.choice(JSON_OPERANDS), rnd.choice([True, False])]
    if r < 0.45:
        return ["cmp", op, gen_number(rnd, 0), gen_number(rnd, 0)]
    if r < 0.5:
        return ["cmp", op, rnd.choice(JSON_OPERANDS), rnd.choice(JSON_OPERANDS)]
    if r < 0.55:
        return ["cmp", rnd.choice(["=", "!="]), ["value"], rnd.choice(["31", "null", ["bytes", "ff"], ["bytes", ""]])]
    if r < 0.6:
        return ["cmp", op, rnd.choice(NUM_CONSTS), ["key"]]
    if r < 0.7:
        pool = [rnd.choice(NUM_CONSTS + STR_CONSTS + [True, False]) for _ in range(rnd.randint(1, 4))]
        return ["in", rnd.choice(JSON_OPERANDS), pool]
    if r < 0.75:
        return ["in", ["key"], rnd.sample(NUM_CONSTS, 3)]
    if r < 0.88:
        target = rnd.choice([["value"], ["json", ["dev"]], ["json", [1]]])
        pattern = "".join(rnd.choice("a7%_\"{") for _ in range(rnd.randint(0, 4)))
        return [rnd.choice(["like", "starts", "contains"]), target, pattern]
    if r < 0.92:
        return ["cmp", op, ["len"], rnd.randint(0, 30)]
    return ["isnull", rnd.choice(JSON_OPERANDS)]


def gen_filter(rnd: random.Random, depth: int = 0):
    r = rnd.random()
    if depth >= 3 or r < 0.4:
        return gen_atom(rnd)
    if r < 0.55:
        return ["not", gen_filter(rnd, depth + 1)]
    return [rnd.choice(["and", "or"]), *(gen_filter(rnd, depth + 1) for _ in range(rnd.randint(1, 3)))]


def test_compiled_filters_match_the_reference():
    rnd = random.Random(20261121)
    rows = make_rows(rnd, 300)
    for _ in range(300):
        wire = gen_filter(rnd)
        # The wire must survive msgpack exactly as a shard receives it.
        received = msgpack.unpackb(msgpack.packb(wire, use_bin_type=True), raw=False)
        f = compile_filter(received)
        for k, v in rows:
            assert f(k, v) == ref(wire, k, v), (wire, k, v)


def test_compiled_expressions_match_the_reference():
    rnd = random.Random(5)
    rows = make_rows(rnd, 200)
    for _ in range(200):
        wire = gen_number(rnd, 0)
        f = compile_expr(wire)
        for k, v in rows:
            expected = ref_operand(wire, k, v)
            expected = expected if is_number(expected) else None
            assert f(k, v) == expected, (wire, k, v)


def test_compile_exprs_evaluates_several_at_once():
    f = compile_exprs([["key"], ["json", ["t"]], ["+", ["len"], 1]])
    assert f(7, b'{"t": 2.5}') == [7, 2.5, 11]
    assert f(7, b"nope") == [7, None, 5]


# --- semantics decisions ---------------------------------------------------------------------------


def check(wire, value: bytes, key: int = 1) -> bool:
    return compile_filter(wire)(key, value)


def test_missing_null_and_invalid_json_are_null():
    gt = ["cmp", ">", ["json", ["temp"]], 30]
    ne = ["cmp", "!=", ["json", ["temp"]], 30]
    for value in (b'{"dev": "a"}', b'{"temp": null}', b"not json", b'{"temp": NaN}', b"[31]", b'"x"', b"\xff"):
        assert not check(gt, value)
        assert not check(ne, value)  # != is a comparison too: false against NULL
        assert check(["not", gt], value)  # NOT is plain negation
        assert check(["isnull", ["json", ["temp"]]], value)
    assert not check(["isnull", ["json", ["temp"]]], b'{"temp": 0}')


def test_kinds_never_mix():
    assert not check(["cmp", "=", ["json", ["t"]], 1], b'{"t": true}')  # true is not the number 1
    assert not check(["cmp", "=", ["json", ["t"]], "30"], b'{"t": 30}')
    assert not check(["cmp", "!=", ["json", ["t"]], "30"], b'{"t": 30}')
    assert check(["cmp", "=", ["json", ["t"]], 30], b'{"t": 30.0}')
    assert check(["cmp", "=", ["json", ["t"]], True], b'{"t": true}')
    assert not check(["in", ["json", ["t"]], [1, "a"]], b'{"t": true}')
    assert check(["in", ["json", ["t"]], [True]], b'{"t": true}')
    assert check(["in", ["json", ["t"]], [1.0]], b'{"t": 1}')
    assert not check(["cmp", "<", ["json", ["a"]], ["json", ["b"]]], b'{"a": false, "b": true}')
    assert not check(["cmp", "=", ["json", ["a"]], ["json", ["b"]]], b'{"a": [1], "b": [1]}')


def test_strings_compare_by_code_point_and_value_by_bytes():
    assert check(["cmp", "<", ["json", ["d"]], "b"], b'{"d": "a7"}')
    assert check(["cmp", "=", ["value"], "h\u00e9"], "h\u00e9".encode())
    assert check(["cmp", "=", ["value"], ["bytes", "00ff"]], b"\x00\xff")
    assert check(["in", ["value"], ["x", ["bytes", "01"]]], b"\x01")
    assert check(["cmp", "=", ["bytes", "61"], "a"], b"")  # constants follow the same rule
    assert check(["in", "a", [["bytes", "61"]]], b"")
    assert check(["like", ["value"], "h_\u00e9"], "h\u00e9\u00e9".encode()) is False  # _ is one byte
    assert check(["like", ["value"], "h__"], "h\u00e9".encode())
    assert check(["like", ["json", ["d"]], "h_"], b'{"d": "h\\u00e9"}')  # on JSON, _ is one character
    assert not check(["like", ["json", ["d"]], "%"], b'{"d": 5}')


def test_arithmetic_nulls():
    assert compile_expr(["/", ["key"], 0])(5, b"") is None
    assert compile_expr(["+", ["json", ["t"]], 1])(5, b'{"t": "1"}') is None
    assert compile_expr(["*", 1e308, 1e308])(5, b"") == float("inf")
    assert compile_expr(["*", ["key"], 1.5])(2**64 - 1, b"") == (2**64 - 1) * 1.5
    assert compile_expr(["neg", ["len"]])(0, b"abc") == -3
    assert compile_expr(["json", ["t"]])(0, b'{"t": true}') is None


def test_json_paths():
    doc = b'{"a": {"b": [10, {"c": "x"}]}, "0": "zero"}'
    assert compile_expr(["json", ["a", "b", 0]])(0, doc) == 10
    assert check(["cmp", "=", ["json", ["a", "b", 1, "c"]], "x"], doc)
    assert check(["isnull", ["json", ["a", "b", 2]]], doc)
    assert check(["isnull", ["json", ["a", 0]]], doc)  # an index on an object
    assert check(["cmp", "=", ["json", ["0"]], "zero"], doc)
    assert check(["cmp", "=", ["json", [1]], "a7"], b'[5, "a7"]')


def test_no_filter_passes_everything():
    assert compile_filter(None)(0, b"")


# --- laziness and speed ----------------------------------------------------------------------------


def test_json_is_parsed_lazily_and_once_per_row(monkeypatch):
    calls = []
    real = predicate._load
    monkeypatch.setattr(predicate, "_load", lambda value: calls.append(1) or real(value))
    value = b'{"t": 31, "d": "a7"}'
    assert not compile_filter(["cmp", ">", ["key"], 5])(1, value)
    assert compile_filter(["like", ["value"], "%a7%"])(1, value)
    assert calls == []  # no JSON operand, no parse
    f = compile_filter(["and", ["cmp", ">", ["key"], 5], ["cmp", ">", ["json", ["t"]], 30],
                        ["cmp", "=", ["json", ["d"]], "a7"], ["not", ["isnull", ["json", ["t"]]]]])
    assert not f(1, value)
    assert calls == []  # the key test failed first
    assert f(6, value) and f(7, value)
    assert len(calls) == 2  # one parse per row, shared by three JSON operands
    compile_exprs([["json", ["t"]], ["json", ["d"]]])(1, value)
    assert len(calls) == 3


def test_like_has_no_catastrophic_backtracking():
    text = "a" * 200_000
    start = time.perf_counter()
    for pattern in ("%a%a%a%a%a%a%a%a%a%a%b", "%a_a%a_a%a_a%a_a%b%", "%" + "a%" * 200 + "b", "_" * 50 + "%b"):
        assert not compile_like(pattern)(text)
        assert not compile_like(pattern.encode())(text.encode())
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize(("pattern", "text", "expected"), [
    ("abc", "abc", True), ("abc", "abcd", False), ("a%", "a", True), ("a%", "ba", False),
    ("%c", "abc", True), ("%b%", "abc", True), ("%b%", "ac", False), ("a_c", "abc", True), ("a_c", "ac", False),
    ("%", "", True), ("", "", True), ("", "a", False), ("_", "", False), ("a%b%c", "abbc", True),
    ("a%b%c", "acb", False), ("%ab%ab%", "abab", True), ("%ab%ab%", "aba", False), ("%aa", "aaa", True),
    ("aa%aa", "aaa", False), ("a%_%b", "ab", False), ("a%_%b", "axb", True), ("100\\%", "100%", True),
    ("100\\%", "1000", False), ("a\\_b", "a_b", True), ("a\\_b", "axb", False), ("a\\\\b", "a\\b", True),
    ("%.*%", "x.*y", True), ("[a]%", "[a]z", True), ("(%)", "(x)", True), ("a%", "a\nb", True),
])
def test_like_cases(pattern, text, expected):
    assert compile_like(pattern)(text) is expected
    assert compile_like(pattern.encode())(text.encode()) is expected


def test_like_trailing_escape_is_an_error():
    with pytest.raises(QueryError, match="lone backslash"):
        compile_like("abc\\")


# --- hostile wire input ----------------------------------------------------------------------------


def nested_not(depth: int) -> list:
    wire = ["bool", True]
    for _ in range(depth - 1):
        wire = ["not", wire]
    return wire


def test_depth_limit():
    compile_filter(nested_not(predicate.MAX_DEPTH))
    with pytest.raises(QueryError, match="nested deeper than 64"):
        compile_filter(nested_not(predicate.MAX_DEPTH + 1))
    deep = ["key"]
    for _ in range(100):
        deep = ["neg", deep]
    with pytest.raises(QueryError, match="nested deeper"):
        compile_expr(deep)
    with pytest.raises(QueryError, match="nested deeper"):
        compile_filter(nested_not(100_000))  # no RecursionError, no crash


def test_node_limit():
    compile_filter(["and", *[["bool", True]] * (predicate.MAX_NODES - 1)])
    with pytest.raises(QueryError, match="more than 10000 nodes"):
        compile_filter(["and", *[["bool", True]] * predicate.MAX_NODES])
    with pytest.raises(QueryError, match="more than 10000 nodes"):
        compile_filter(["in", ["key"], list(range(predicate.MAX_NODES))])
    with pytest.raises(QueryError, match="more than 10000 nodes"):
        compile_filter(["isnull", ["json", ["a"] * predicate.MAX_NODES]])


@pytest.mark.parametrize("wire", [
    {"op": "and"}, "key", 5, [], [5], [None], ["xor", ["bool", True]], ["and"], ["or"],
    ["not"], ["not", ["bool", True], ["bool", True]], ["bool", 1], ["bool"], ["bool", "true"],
    ["cmp", "==", ["key"], 1], ["cmp", ">", ["key"]], ["cmp", ">", ["key"], 1, 2], ["cmp", 1, ["key"], 1],
    ["cmp", ">", ["key"], "a"], ["cmp", ">", ["value"], "a"], ["cmp", "<", ["json", ["a"]], True],
    ["cmp", "=", ["key"], ["bytes", "00"]], ["cmp", "=", ["key"], None], ["cmp", "=", ["key"], 2**64],
    ["cmp", "=", ["key"], -(2**63) - 1], ["cmp", "=", ["key"], float("nan")], ["cmp", "=", ["key"], float("inf")],
    ["cmp", "=", ["value"], ["bytes", "0"]], ["cmp", "=", ["value"], ["bytes", "zz"]], ["cmp", "=", ["value"], ["bytes", 5]],
    ["cmp", "=", ["key", 1], 1], ["cmp", "=", ["json"], 1], ["cmp", "=", ["json", []], 1], ["cmp", "=", ["json", "a"], 1],
    ["cmp", "=", ["json", [-1]], 1], ["cmp", "=", ["json", [1.5]], 1], ["cmp", "=", ["json", [True]], 1],
    ["cmp", "=", ["json", [None]], 1], ["cmp", "=", ["json", [["a"]]], 1], ["cmp", "=", ["nope"], 1],
    ["cmp", "=", ["+", ["key"]], 1], ["cmp", "=", ["+", ["value"], 1], 1], ["cmp", "=", ["+", "a", 1], 1],
    ["cmp", "=", {"key": 1}, 1], ["in", ["key"], 1], ["in", ["key"], [["key"]]], ["in", ["key"], ["a"]],
    ["in", ["key"]], ["like", ["key"], "a%"], ["like", ["value"], 5], ["like", ["value"], ["value"]],
    ["like", ["json", ["a"]], ["bytes", "00"]], ["like", "a", "a"], ["starts", ["value"]], ["contains", ["len"], "a"],
    ["like", ["value"], "abc\\"], ["isnull", ["key"]], ["isnull", ["value"]], ["isnull", 5], ["isnull"],
    ["and", ["bool", True], ["key"]], ["cmp", "=", ["neg"], 1], ["cmp", "=", ["neg", "x"], 1],
])
def test_malformed_filters_are_refused(wire):
    with pytest.raises(QueryError):
        compile_filter(wire)


@pytest.mark.parametrize("wire", [["value"], "a", True, None, ["bytes", "00"], ["json"], ["cmp", "=", 1, 1],
                                  ["+", ["key"], "a"], ["frob"], [], float("nan"), 2**64])
def test_malformed_expressions_are_refused(wire):
    with pytest.raises(QueryError):
        compile_expr(wire)


def test_malformed_expression_lists_are_refused():
    with pytest.raises(QueryError):
        compile_exprs(["key"])
    with pytest.raises(QueryError):
        compile_exprs([["key"], ["value"]])


def test_random_garbage_never_escapes_as_another_exception():
    rnd = random.Random(99)
    atoms = ["and", "or", "not", "cmp", "in", "like", "isnull", "json", "key", "value", "len", "bytes", "+", "neg",
             "=", ">", 1, -1, 2**70, 1.5, "", "a", None, True, [], {}, b"x"]

    def garbage(depth: int):
        if depth > 4 or rnd.random() < 0.3:
            return rnd.choice(atoms)
        return [garbage(depth + 1) for _ in range(rnd.randint(0, 4))]

    for _ in range(3000):
        wire = garbage(0)
        try:
            f = compile_filter(wire)
        except QueryError:
            continue
        for k, v in ((0, b""), (5, b'{"a": 1}'), (2**64 - 1, b"\xff")):
            assert isinstance(f(k, v), bool)
