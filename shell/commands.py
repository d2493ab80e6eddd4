"""Backslash commands: ``\\?``, ``\\connect``, ``\\format``, ``\\jsonkeys``, ``\\keys``,
``\\timezone``, ``\\timing``, ``\\consistency``, ``\\x``, ``\\o``, ``\\pager``, ``\\colwidth``,
``\\i`` and ``\\q``.

A command is one line. Its arguments are split like a POSIX shell would (so ``\\i 'my file.sql'``
works), and a trailing ``;`` is ignored because people type one out of habit.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftkv.errors import RaftKVError
from raftkv.query.timestamps import parse_timezone, zone_name

from . import formats
from .output import OutputFile
from .runner import CONSISTENCIES, Outcome

if TYPE_CHECKING:
    from .runner import Shell

ON_OFF = ("on", "off")


class CommandError(ValueError):
    """A backslash command is malformed, unknown, or has bad arguments."""


@dataclass(frozen=True)
class Command:
    """A parsed command line: ``name`` without the backslash, and its arguments."""

    name: str
    args: tuple[str, ...] = ()


def parse_command(text: str) -> Command:
    """Parse ``\\name arg ...``; raises :class:`CommandError` if it is not one."""
    text = text.strip()
    if not text.startswith("\\") or len(text) < 2:
        raise CommandError(f"not a backslash command: {text!r}; type \\? for help")
    parts = text[1:].removesuffix(";").split(maxsplit=1)
    if not parts:
        raise CommandError(f"not a backslash command: {text!r}; type \\? for help")
    name, rest = parts[0], parts[1] if len(parts) > 1 else ""
    try:
        args = shlex.split(rest)
    except ValueError as exc:
        raise CommandError(f"\\{name}: {exc}") from None
    return Command(name, tuple(args))


@dataclass(frozen=True)
class CommandSpec:
    """One command: its names, usage, help line, argument choices (for completion) and action."""

    names: tuple[str, ...]
    usage: str
    help: str
    run: Callable[[Shell, tuple[str, ...]], Outcome]
    choices: tuple[str, ...] = ()
    takes_path: bool = False


def _expect(args: tuple[str, ...], most: int, usage: str) -> None:
    if len(args) > most:
        raise CommandError(f"too many arguments; usage: {usage}")


def _help(shell: Shell, args: tuple[str, ...]) -> Outcome:
    shell.out.write(help_text())
    shell.out.flush()
    return Outcome.OK


def _quit(shell: Shell, args: tuple[str, ...]) -> Outcome:
    return Outcome.QUIT


def _connect(shell: Shell, args: tuple[str, ...]) -> Outcome:
    _expect(args, 1, "\\connect HOST:PORT[,HOST:PORT...]")
    if not args:
        state = "connected to" if shell.connected else "not connected; last addresses:"
        shell.info(f"{state} {shell.seeds or '(none)'} ({shell.settings.consistency})")
        return Outcome.OK
    shell.connect(args[0])
    shell.info(f"connected to {shell.seeds} ({shell.settings.consistency})")
    return Outcome.OK


def _format(shell: Shell, args: tuple[str, ...]) -> Outcome:
    _expect(args, 1, "\\format table|vertical|json|csv")
    if args:
        if args[0] not in formats.FORMATS:
            raise CommandError(f"unknown format {args[0]!r}; choose one of: {', '.join(formats.FORMATS)}")
        shell.settings.format = args[0]
    shell.info(f"output format is {shell.settings.format}")
    return Outcome.OK


def _choice(args: tuple[str, ...], usage: str, choices: tuple[str, ...], what: str) -> str | None:
    """The one optional argument of a setting command, checked against ``choices`` (None if absent)."""
    _expect(args, 1, usage)
    if not args:
        return None
    value = args[0].lower()
    if value not in choices:
        raise CommandError(f"unknown {what} {args[0]!r}; choose one of: {', '.join(choices)}")
    return value


def _json_keys(shell: Shell, args: tuple[str, ...]) -> Outcome:
    style = _choice(args, "\\jsonkeys string|number", formats.JSON_KEYS, "json key style")
    if style is not None:
        shell.settings.json_keys = style
    shell.info(f"json output writes keys as {shell.settings.json_keys}s")
    return Outcome.OK


def _keys(shell: Shell, args: tuple[str, ...]) -> Outcome:
    style = _choice(args, "\\keys int|timestamp", formats.KEY_STYLES, "key style")
    if style is not None:
        shell.settings.keys = style
    if shell.settings.keys == "timestamp":
        shell.info(f"keys are shown as timestamps (RFC 3339, time zone {shell.settings.timezone})")
    else:
        shell.info("keys are shown as integers")
    return Outcome.OK


def _timezone(shell: Shell, args: tuple[str, ...]) -> Outcome:
    _expect(args, 1, "\\timezone UTC|+HH:MM|IANA-NAME")
    if args:
        try:
            tz = parse_timezone(args[0])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        shell.settings.timezone = zone_name(tz)
    shell.info(f"timestamps are shown in time zone {shell.settings.timezone}")
    return Outcome.OK


def _expanded(shell: Shell, args: tuple[str, ...]) -> Outcome:
    _expect(args, 0, "\\x")
    # psql's expanded-display toggle: vertical, or back to table
    shell.settings.format = "table" if shell.settings.format == "vertical" else "vertical"
    shell.info(f"output format is {shell.settings.format}")
    return Outcome.OK


def _on_off(args: tuple[str, ...], current: bool, usage: str) -> bool:
    _expect(args, 1, usage)
    if not args:
        return not current  # no argument toggles, as in psql
    word = args[0].lower()
    if word not in ON_OFF:
        raise CommandError(f"expected on or off, not {args[0]!r}; usage: {usage}")
    return word == "on"


def _timing(shell: Shell, args: tuple[str, ...]) -> Outcome:
    shell.settings.timing = _on_off(args, shell.settings.timing, "\\timing [on|off]")
    shell.info(f"timing is {'on' if shell.settings.timing else 'off'}")
    return Outcome.OK


def _consistency(shell: Shell, args: tuple[str, ...]) -> Outcome:
    _expect(args, 1, "\\consistency linearizable|serializable")
    if args:
        level = args[0].lower()
        if level not in CONSISTENCIES:
            raise CommandError(f"unknown consistency {args[0]!r}; choose linearizable or serializable")
        if level != shell.settings.consistency:
            if shell.connected:
                shell.connect(consistency=level)  # a client's consistency is fixed when it is made
            else:
                shell.settings.consistency = level
    shell.info(f"reads are {shell.settings.consistency}")
    return Outcome.OK


def _output(shell: Shell, args: tuple[str, ...]) -> Outcome:
    _expect(args, 1, "\\o [FILE]")
    if args and args[0].startswith("|"):
        raise CommandError("\\o |COMMAND is not supported; give a file name")
    new = None
    if args:
        try:
            new = OutputFile(args[0])  # opened first: a bad path keeps the current destination
        except OSError as exc:
            raise CommandError(f"cannot write {args[0]}: {exc.strerror or exc}") from None
    old, shell.output_file = shell.output_file, new
    if old is not None:
        old.close()
    shell.info(f"results go to {new.path}" if new is not None else "results go to the terminal")
    return Outcome.OK


def _pager(shell: Shell, args: tuple[str, ...]) -> Outcome:
    shell.settings.pager = _on_off(args, shell.settings.pager, "\\pager [on|off]")
    if shell.settings.pager:
        shell.pager_state.failed = None  # turned on again: the pager that failed gets another try
    shell.info(f"pager is {'on' if shell.settings.pager else 'off'}")
    return Outcome.OK


def _colwidth(shell: Shell, args: tuple[str, ...]) -> Outcome:
    usage = "\\colwidth [N]"
    _expect(args, 1, usage)
    if args:
        try:
            width = int(args[0])
        except ValueError:
            raise CommandError(f"expected a number of columns, not {args[0]!r}; usage: {usage}") from None
        if width < formats.MIN_MAX_CELL:
            raise CommandError(f"the column width must be at least {formats.MIN_MAX_CELL}")
        shell.settings.max_cell = width
    shell.info(f"table cells wider than {shell.settings.max_cell} columns are cut, ending in …")
    return Outcome.OK


def _include(shell: Shell, args: tuple[str, ...]) -> Outcome:
    if len(args) != 1:
        raise CommandError("usage: \\i FILE")
    return shell.run_file(args[0])


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(("?", "help", "h"), "\\?", "show this help", _help),
    CommandSpec(("connect", "c"), "\\connect [ADDRS]", "connect to other nodes (host:port,...), or show the current ones",
                _connect),
    CommandSpec(("format",), "\\format [table|vertical|json|csv]", "set or show the output format", _format,
                formats.FORMATS),
    CommandSpec(("jsonkeys",), "\\jsonkeys [string|number]",
                "set or show how the json format writes keys (strings are exact in JavaScript and jq)",
                _json_keys, formats.JSON_KEYS),
    CommandSpec(("keys",), "\\keys [int|timestamp]",
                "set or show how keys are shown: integers, or RFC 3339 timestamps with nanoseconds",
                _keys, formats.KEY_STYLES),
    CommandSpec(("timezone", "tz"), "\\timezone [ZONE]",
                "set or show the time zone of timestamps: UTC, +HH:MM or a name such as Europe/Berlin",
                _timezone, ("UTC",)),
    CommandSpec(("x",), "\\x", "toggle expanded (vertical) output", _expanded),
    CommandSpec(("timing",), "\\timing [on|off]", "show the elapsed time after each statement (toggles)",
                _timing, ON_OFF),
    CommandSpec(("consistency",), "\\consistency [linearizable|serializable]", "set or show the read consistency",
                _consistency, CONSISTENCIES),
    CommandSpec(("o", "out"), "\\o [FILE]", "send results to FILE (emptied first); \\o alone: back to the terminal",
                _output, takes_path=True),
    CommandSpec(("pager",), "\\pager [on|off]", "page results taller than the screen through $PAGER (toggles)",
                _pager, ON_OFF),
    CommandSpec(("colwidth",), "\\colwidth [N]",
                f"set or show the widest table cell, in columns (default {formats.DEFAULT_MAX_CELL})", _colwidth),
    CommandSpec(("i", "include"), "\\i FILE", "run the statements in FILE (stops at the first error)", _include,
                takes_path=True),
    CommandSpec(("q", "quit"), "\\q", "quit (so does Ctrl-D)", _quit),
)


def lookup(name: str) -> CommandSpec | None:
    """The command called ``name`` (without the backslash), or None."""
    return next((c for c in COMMANDS if name in c.names), None)


def help_text() -> str:
    """The ``\\?`` text."""
    width = max(len(c.usage) for c in COMMANDS)
    lines = ["Statements end with ';' and may span lines: SELECT, INSERT, PUT, GET, DELETE, EXPLAIN, SHOW,",
             "SPLIT SHARD. SPLIT SHARD s0003 [AT key] splits a shard in two; SHOW SHARDS lists the shards.",
             "See docs/query-language.md. Ctrl-C cancels a running query or clears the input; Ctrl-D quits.",
             "", "Commands:"]
    lines += [f"  {c.usage.ljust(width)}  {c.help}" for c in COMMANDS]
    return "\n".join(lines) + "\n"


def run_command(shell: Shell, text: str, where: str = "") -> Outcome:
    """Parse and run one command line, printing errors on the shell's error stream."""
    try:
        command = parse_command(text)
        spec = lookup(command.name)
        if spec is None:
            raise CommandError(f"unknown command \\{command.name}; type \\? for the list")
        outcome = spec.run(shell, command.args)
        shell.out.flush()
        return outcome
    except CommandError as exc:
        shell.error(str(exc), where)
    except RaftKVError as exc:
        shell.error(exc.message, where)
    return Outcome.FAILED
