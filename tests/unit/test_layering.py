"""The layout's rules that code review found worth enforcing: each I/O library behind one module,
and a node process that never loads the query parser."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _importers(library: str) -> set[str]:
    found = set()
    for path in (ROOT / "raftkv").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:2] == ["import", library] or (words[:1] == ["from"] and words[1:2] == [library]):
                found.add(str(path.relative_to(ROOT)))
    return found


def test_each_io_library_is_imported_by_one_module():
    assert _importers("msgpack") == {"raftkv/protocol/codec.py"}
    assert _importers("plyvel") == {"raftkv/storage/leveldb.py"}
    assert _importers("lark") == {"raftkv/query/parser.py"}
    assert _importers("pysyncobj") == {"raftkv/replication/group.py"}


def test_a_node_process_evaluating_filters_never_loads_the_parser():
    code = (
        "import sys\n"
        "import raftkv.server.node\n"
        "from raftkv.replication import commands\n"
        "from raftkv.query.predicate import compile_filter\n"
        "from raftkv.query.aggregate import Aggregates\n"
        "assert 'lark' not in sys.modules, 'loaded at import'\n"
        "wire = ['like', ['value'], '%a%']\n"
        "assert compile_filter(wire)(1, b'xay') and commands._size(wire) > 1\n"
        "print('lark' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
