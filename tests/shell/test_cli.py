"""Argument parsing of ``raftkv shell`` / ``raftkv up`` (no cluster needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from raftkv.cli import build_parser

from .conftest import cli_env

pytestmark = pytest.mark.timeout(120)


def test_scripts_keep_their_command_line_order() -> None:
    args = build_parser().parse_args(["shell", "-f", "a.sql", "-e", "GET 1", "--file", "b.sql"])
    assert args.scripts == [("f", "a.sql"), ("e", "GET 1"), ("f", "b.sql")]
    assert args.connect is None and args.data_dir == "./raftkv-data" and args.format is None
    assert args.consistency == "linearizable" and not args.no_timing


def test_up_defaults_defer_to_an_existing_cluster() -> None:
    args = build_parser().parse_args(["up"])
    assert (args.nodes, args.shards, args.scripts) == (None, None, None)
    args = build_parser().parse_args(["up", "--nodes", "5", "--shards", "16", "--format", "json"])
    assert (args.nodes, args.shards, args.format) == (5, 16, "json")


def test_bad_options_are_usage_errors() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["shell", "--format", "xml"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["shell", "--consistency", "strong"])


def test_scripts_do_not_load_prompt_toolkit() -> None:
    # only the interactive session needs it; -e/-f/stdin start faster without it
    code = ("import sys; from shell.cli import run_session; import shell.commands, shell.runner; "
            "print(any(m.startswith('prompt_toolkit') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=True)
    assert out.stdout.strip() == "False"
