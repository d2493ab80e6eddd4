"""``raftkv import`` and ``raftkv export``: COPY from the command line (raftkv.bulk does the work).

They find the cluster as ``raftkv shell`` does: ``--connect`` seeds, or else the local cluster in
``--data-dir`` (default ./raftkv-data), with its token and TLS settings. The report (and a
progress line on a terminal) goes to stderr, so that ``raftkv export ... -`` can write the rows
to stdout. ``-`` means standard input or output here only: a COPY statement takes files.
``raftkv export ... -`` refuses a terminal as its standard output, whose control characters the
rows could hold (csv writes text as it is).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from shell.cli import client_factory, local_seeds  # the shell's way of finding and reaching a cluster
from shell.progress import ProgressLine

from . import bulk
from .cluster.launcher import DEFAULT_DATA_DIR
from .errors import RaftKVError


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``import`` and ``export`` to the ``raftkv`` parser's subcommands."""
    formats = ("Formats: csv (columns key,value; binary values as \\x and hex digits, text starting with a "
               "backslash with one more) or jsonl ({\"key\": \"42\", \"value\": ...} per line, a JSON value "
               "embedded); see docs/query-language.md, COPY.")
    i = sub.add_parser("import", help="load rows from a csv or jsonl file (like COPY kv FROM 'file')",
                       description="Write the rows of FILE ('-': stdin) into the cluster, in batches. A bad row "
                                   "stops the import with its line number; the rows before it are written.",
                       epilog=formats)
    i.add_argument("file", metavar="FILE", help="the file to read ('-' for standard input)")
    _options(i)
    i.set_defaults(func=_cmd_import)

    e = sub.add_parser("export", help="write a query's rows to a csv or jsonl file (like COPY (SELECT ...) TO)",
                       description="Run --query and write its rows to FILE ('-': stdout), page by page.",
                       epilog=formats)
    e.add_argument("file", metavar="FILE", help="the file to write ('-' for standard output)")
    e.add_argument("--query", default="SELECT * FROM kv", metavar="SELECT",
                   help="the SELECT whose rows to write (default: SELECT * FROM kv, every row)")
    _options(e)
    e.set_defaults(func=_cmd_export)


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=bulk.FORMATS, default=None,
                   help="csv or jsonl (default: jsonl for a name ending in .jsonl, .ndjson or .json, else csv)")
    p.add_argument("--header", action="store_true", help="csv: a first line names the columns (key,value)")
    p.add_argument("--key-format", choices=bulk.KEY_FORMATS, default="int",
                   help="keys as integers (default) or as RFC 3339 timestamps with nanoseconds")
    p.add_argument("--connect", metavar="ADDRS", default=None,
                   help="host:port[,host:port...] of any nodes (default: the local cluster in --data-dir)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                   help=f"local cluster to use without --connect (default {DEFAULT_DATA_DIR})")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="file holding the cluster's client token (default without --connect: the local cluster's)")
    p.add_argument("--tls", action="store_true", help="speak TLS to the nodes (implied by --tls-ca)")
    p.add_argument("--tls-ca", default=None, metavar="FILE",
                   help="PEM file of the CA that signed the nodes' certificates")


def _client(args: argparse.Namespace) -> Any:
    seeds = args.connect or local_seeds(args.data_dir)
    return client_factory(args)(seeds, "linearizable")


def _run(args: argparse.Namespace, label: str, work: Any) -> int:
    options = bulk.CopyOptions.for_path(args.file, args.format, args.header, args.key_format)
    line = ProgressLine(sys.stderr, label)
    started = time.monotonic()
    client = _client(args)
    try:
        rows = work(client, options, line)
    except KeyboardInterrupt as exc:
        # an import has waited for the batch it was writing before it got here, so the client is
        # closed only now, and the count is what the cluster has
        line.clear()
        done = exc.message if isinstance(exc, bulk.CopyInterrupted) else f"after {line.rows:,} rows"
        print(f"raftkv {label}: cancelled: {done}", file=sys.stderr)
        return 130
    except RaftKVError as exc:
        line.clear()
        raise RaftKVError(f"{label}: {exc.message}") from None
    finally:
        client.close()
    line.clear()
    verb = "imported" if label == "import" else "exported"
    where = "from" if label == "import" else "to"
    print(f"{verb} {rows:,} row{'' if rows == 1 else 's'} {where} {args.file} "
          f"in {time.monotonic() - started:.2f} s", file=sys.stderr)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    if args.file == "-":
        return _run(args, "import", lambda client, options, line:
                    bulk.import_stream(client, sys.stdin.buffer, "-", options, progress=line))
    return _run(args, "import", lambda client, options, line:
                bulk.import_file(client, args.file, options, progress=line))


def _cmd_export(args: argparse.Namespace) -> int:
    if args.file != "-":
        return _run(args, "export", lambda client, options, line:
                    bulk.export_file(client, args.query, args.file, options, progress=line))
    if sys.stdout.isatty():
        raise RaftKVError("export: standard output is a terminal, and the rows may hold control characters "
                          "that a terminal would act on; write them to a file (raftkv export FILE) or a pipe "
                          "(raftkv export - | less), or look at them in raftkv shell")

    def to_stdout(client: Any, options: bulk.CopyOptions, line: ProgressLine) -> int:
        rows = bulk.export_rows(client, args.query, sys.stdout, options, progress=line)
        sys.stdout.flush()
        return rows

    return _run(args, "export", to_stdout)
