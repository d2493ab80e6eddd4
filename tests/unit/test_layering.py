"""The layout's rules that code review found worth enforcing: each I/O library behind one module,
a node process that never loads the query parser, and a library (raftkv/) that does not use the
shell's code (shell/) except in its command-line entry points."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _importers(library: str, submodules: bool = False) -> set[str]:
    """The files under raftkv/ that import ``library`` (with ``submodules``, also ``library.x``),
    at the top or inside a function."""
    found = set()
    for path in (ROOT / "raftkv").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] not in (["import"], ["from"]) or len(words) < 2:
                continue
            name = words[1].rstrip(",")
            if name == library or (submodules and name.startswith(library + ".")):
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
    assert _python(code) == "False"


def _python(code: str) -> str:
    """What a fresh Python process running ``code`` prints, stripped; it must succeed."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_library_uses_the_shell_only_in_its_command_line_entry_points():
    # raftkv.bulk and raftkv.values are the library that the shell builds on, not the other way
    assert _importers("shell", submodules=True) == {"raftkv/cli.py", "raftkv/bulk_cli.py"}


def test_a_copy_through_the_library_never_loads_the_shell(tmp_path):
    code = (
        "import sys\n"
        "from raftkv import bulk\n"
        "class Writer:\n"
        "    def put_many(self, pairs):\n"
        "        self.pairs = list(pairs)\n"
        "        return len(self.pairs)\n"
        f"path = {str(tmp_path / 'in.jsonl')!r}\n"
        "open(path, 'w').write('{\"key\": \"1\", \"value\": {\"a\":1}}\\n')\n"
        "w = Writer()\n"
        "assert bulk.run_copy(w, f\"COPY kv FROM '{path}'\").rows == 1 and w.pairs == [(1, b'{\"a\":1}')]\n"
        "print(sorted(m for m in sys.modules if m == 'shell' or m.startswith('shell.')))\n"
    )
    assert _python(code) == "[]"
