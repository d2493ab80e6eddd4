"""``raftkv shell`` and ``raftkv up``: the command-line entry points of the shell.

``raftkv shell`` is interactive when standard input is a terminal and neither ``-e`` nor ``-f``
is given. Otherwise it runs the statements of ``-e`` and ``-f`` (in the order given) or of
standard input, and stops at the first statement that fails: the error goes to stderr and the
exit status is 1 (130 after Ctrl-C). ``raftkv up`` starts (or reuses) a local cluster first.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from raftkv.cluster.launcher import DEFAULT_DATA_DIR  # one default for up, shell and cluster status
from raftkv.errors import InvalidArgument, RaftKVError
from raftkv.query.timestamps import zone_argument

from .formats import FORMATS, JSON_KEYS, KEY_STYLES
from .runner import (
    CONSISTENCIES,
    ClientFactory,
    Outcome,
    QueryClient,
    Settings,
    Shell,
    default_client_factory,
)


class _ScriptAction(argparse.Action):
    """Collects ``-e`` and ``-f`` into one list of (kind, text) so they run in command-line order."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((self.const, values))
        setattr(namespace, self.dest, items)


timezone_option = zone_argument  # the --timezone of shell and up


def _session_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="output format (default: table on a terminal, csv otherwise)")
    p.add_argument("--json-keys", choices=JSON_KEYS, default="string",
                   help="how the json format writes keys: as strings (default; exact in JavaScript "
                        "and jq, which round integers above 2**53) or as numbers")
    p.add_argument("--keys", choices=KEY_STYLES, default="int",
                   help="how every format shows keys: int (default) or timestamp (RFC 3339 with "
                        "nanoseconds, in --timezone)")
    p.add_argument("--timezone", type=timezone_option, default="UTC", metavar="ZONE",
                   help="time zone of timestamps: UTC (default), an offset such as +02:00, or an IANA "
                        "name such as Europe/Berlin")
    p.add_argument("-e", "--execute", dest="scripts", action=_ScriptAction, const="e", metavar="STATEMENTS",
                   help="run these ';'-separated statements and exit (repeatable)")
    p.add_argument("-f", "--file", dest="scripts", action=_ScriptAction, const="f", metavar="FILE",
                   help="run the statements in FILE ('-' for stdin) and exit (repeatable)")
    p.add_argument("--consistency", choices=CONSISTENCIES, default="linearizable",
                   help="read consistency (default linearizable)")
    p.add_argument("--no-timing", action="store_true", help="do not print elapsed times")
    p.add_argument("--no-pager", action="store_true",
                   help="print results taller than the terminal directly instead of through $PAGER")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``shell`` and ``up`` to the ``raftkv`` parser's subcommands."""
    epilog = ("Scripts (-e, -f, stdin) stop at the first failing statement; the exit status is then 1. "
              "Rows go to stdout; errors, and the row count/timing lines of the csv and json formats, "
              "go to stderr.")
    p = sub.add_parser("shell", help="the query shell (interactive on a terminal; -e/-f/stdin otherwise)",
                       description="Run queries against a raftkv cluster.", epilog=epilog)
    p.add_argument("--connect", metavar="ADDRS", default=None,
                   help="host:port[,host:port...] of any nodes (default: the local cluster in --data-dir)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                   help=f"local cluster to use without --connect (default {DEFAULT_DATA_DIR})")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="file holding the cluster's client token (nodes started with --client-token-file; "
                        "default without --connect: the local cluster's)")
    p.add_argument("--tls", action="store_true", help="speak TLS to the nodes (implied by --tls-ca)")
    p.add_argument("--tls-ca", default=None, metavar="FILE",
                   help="PEM file of the CA that signed the nodes' certificates (default without --connect: "
                        "the local cluster's; else the system's CAs)")
    _session_options(p)
    p.set_defaults(func=cmd_shell)

    u = sub.add_parser("up", help="start (or reuse) a local cluster and open the shell on it",
                       description="Start the local cluster in --data-dir if it is not running (creating it "
                                   "on first use), print its client addresses and open the shell. The "
                                   "cluster keeps running after the shell exits.", epilog=epilog)
    u.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=f"cluster directory (default {DEFAULT_DATA_DIR})")
    # None = 3 nodes / 12 shards for a new cluster, whatever an existing one has
    u.add_argument("--nodes", type=int, default=None, help="node count of a new cluster (default 3)")
    u.add_argument("--shards", type=int, default=None, help="shard count of a new cluster (default 12)")
    u.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the cluster (default 60)")
    _session_options(u)
    u.set_defaults(func=cmd_up)


def local_seeds(data_dir: str) -> str:
    """The client addresses of the local cluster kept in ``data_dir`` (a clear error if none)."""
    from raftkv.cluster import launcher

    try:
        return ",".join(launcher.addresses(data_dir))
    except InvalidArgument:
        raise RaftKVError(f"no local cluster in {os.path.abspath(data_dir)}: start one with "
                          f"`raftkv up --data-dir {data_dir}`, or pass --connect HOST:PORT") from None


def _interactive(args: argparse.Namespace) -> bool:
    return not args.scripts and sys.stdin.isatty()


def run_session(args: argparse.Namespace, seeds: str) -> int:
    """Run the shell as the options say; returns the exit status."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")  # odd text must not crash the shell on a C locale
    fmt = args.format or ("table" if sys.stdout.isatty() else "csv")
    settings = Settings(format=fmt, timing=not args.no_timing, consistency=args.consistency,
                        json_keys=args.json_keys, keys=args.keys, timezone=args.timezone,
                        pager=not args.no_pager)
    shell = Shell(seeds, settings, out=sys.stdout, err=sys.stderr, client_factory=client_factory(args))
    try:
        status = _run(shell, args)
    finally:
        closed = shell.end()  # the client and the \o file: a file that fails to close is an error
    return status if closed or status else 1


def _run(shell: Shell, args: argparse.Namespace) -> int:
    """The session itself: the prompt, stdin or the scripts; returns the exit status."""
    try:
        if _interactive(args):
            from .app import run_interactive

            return run_interactive(shell)
        if not args.scripts:
            return shell.run_lines(sys.stdin, "stdin").exit_code
        for kind, value in args.scripts:
            outcome = shell.run_text(value) if kind == "e" else shell.run_file(value)
            if outcome is not Outcome.OK:
                return outcome.exit_code
        return 0
    except BrokenPipeError:
        # the reader left (| head): stop quietly, and keep Python from complaining at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def client_factory(args: argparse.Namespace) -> ClientFactory:
    """The shell's client maker, with the token and TLS options given (``raftkv up`` has none:
    it uses the local cluster's, as ``raftkv shell`` without ``--connect`` does)."""
    from raftkv.server.config import read_token_file

    token_file = getattr(args, "token_file", None)
    tls_ca = getattr(args, "tls_ca", None)
    tls = getattr(args, "tls", False)
    if getattr(args, "connect", None) is None:
        from raftkv.cluster import launcher

        stored = launcher.client_security(args.data_dir)
        token_file = token_file or stored.get("client_token_file")
        tls_ca = tls_ca or stored.get("tls_ca")
        tls = tls or "tls_cert" in stored
    if token_file is None and tls_ca is None and not tls:
        return default_client_factory
    token = read_token_file(token_file) if token_file is not None else None

    def make(seeds: str, consistency: str) -> QueryClient:
        return default_client_factory(seeds, consistency, token=token, tls=tls, tls_ca=tls_ca)

    return make


def cmd_shell(args: argparse.Namespace) -> int:
    """``raftkv shell``."""
    return run_session(args, args.connect or local_seeds(args.data_dir))


def cmd_up(args: argparse.Namespace) -> int:
    """``raftkv up``."""
    from raftkv.cluster.cli import start_local

    print(f"starting the local cluster in {os.path.abspath(args.data_dir)} ...", file=sys.stderr, flush=True)
    try:
        # as `raftkv cluster start`: a new cluster on 7401.. (peers 7501..) if free, else free ports, said so
        info = start_local(args.data_dir, nodes=args.nodes, shards=args.shards, wait=args.wait)
    except OSError as exc:
        raise RaftKVError(f"up: {exc}") from None
    print(f"cluster ready: {len(info.nodes)} nodes, {info.shards} shards\n"
          f"seeds: {info.seeds}", file=sys.stderr, flush=True)
    code = run_session(args, info.seeds)
    print(f"the cluster keeps running; stop it with: raftkv cluster stop --data-dir {args.data_dir}",
          file=sys.stderr)
    return code
