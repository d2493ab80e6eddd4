"""A script that leaves a client or a scan open still exits, promptly and without warnings."""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPTS = {
    "half-read scan, never closed": """
        db = Client(SEEDS)
        db.put_many([(k, b"v") for k in range(1, 5001)])
        rows = db.scan(0, 2**64 - 1)
        print(next(rows))
    """,
    "half-read query, never closed": """
        db = Client(SEEDS)
        db.put_many([(k, b"v") for k in range(1, 5001)])
        it = iter(db.query("SELECT * FROM kv"))
        print(next(it))
    """,
    "half-read scan, then close": """
        db = Client(SEEDS)
        db.put_many([(k, b"v") for k in range(1, 5001)])
        rows = db.scan(0, 2**64 - 1)
        print(next(rows))
        db.close()
    """,
    "client never closed": """
        db = Client(SEEDS)
        db.put(1, b"x")
        print(db.get(1))
    """,
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_the_script_exits_without_warnings(cluster, name):
    script = f"from raftkv import Client\nSEEDS = {cluster.seeds!r}\n" + textwrap.dedent(SCRIPTS[name])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "the script printed nothing"
    assert "destroyed but it is pending" not in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
