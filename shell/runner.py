"""The shell's engine: run statements and backslash commands, print results, keep the settings.

Nothing here touches the terminal beyond writing to the streams it is given, so the same code
serves the interactive session, ``-e``/``-f`` scripts and piped input, and it is tested with
fake clients. Scripts stop at the first failing statement (like ``psql -v ON_ERROR_STOP=1``).
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Any, Protocol, TextIO

from raftkv.errors import QueryError, RaftKVError
from raftkv.query.timestamps import parse_timezone
from raftkv.values import key_columns  # which result columns hold keys; raftkv.bulk's too

from . import formats, output
from .fields import RecentFields
from .pager import OutputClosed
from .tokens import Item, iter_script, split_script

CONSISTENCIES = ("linearizable", "serializable")
MAX_INCLUDE_DEPTH = 16  # \i files including each other must not recurse forever
PROGRESS_AFTER = 0.3  # seconds: quick results never show a progress line


class Outcome(enum.Enum):
    """How running something ended."""

    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"  # Ctrl-C
    QUIT = "quit"  # \q

    @property
    def exit_code(self) -> int:
        """The process exit status this outcome maps to."""
        return {"ok": 0, "quit": 0, "failed": 1, "cancelled": 130}[self.value]


class Result(Protocol):
    """What ``Client.query`` returns."""

    columns: tuple[str, ...]
    status: str

    def pages(self) -> Iterable[Sequence[Sequence[Any]]]: ...

    def close(self) -> None: ...


class QueryClient(Protocol):
    """The part of :class:`raftkv.Client` the shell uses."""

    def query(self, statement: Any) -> Result: ...

    def close(self) -> None: ...


ClientFactory = Callable[[str, str], QueryClient]


def default_client_factory(seeds: str, consistency: str, **security: Any) -> QueryClient:
    """A connected :class:`raftkv.Client` (fetching the shard map proves the cluster answers);
    ``security``: its ``token``, ``tls`` and ``tls_ca`` options, if any."""
    from raftkv import Client

    client = Client(seeds, consistency=consistency, **security)
    try:
        client.connect()
    except BaseException:
        client.close()
        raise
    return client


@dataclass
class Settings:
    """What backslash commands change."""

    format: str = "table"
    timing: bool = True
    consistency: str = "linearizable"
    max_cell: int = formats.DEFAULT_MAX_CELL
    json_keys: str = "string"  # keys in json output: strings (exact everywhere) or numbers
    keys: str = "int"  # keys in every format: integers, or RFC 3339 timestamps ("timestamp")
    timezone: str = "UTC"  # the zone timestamps are shown in: UTC, +HH:MM or an IANA name
    pager: bool = True  # results taller than a terminal go through $PAGER (see shell.output)

    @property
    def tzinfo(self) -> tzinfo:
        """:attr:`timezone` as a ``tzinfo`` (a name that no longer resolves falls back to UTC)."""
        try:
            return parse_timezone(self.timezone)
        except ValueError:
            return UTC


class Shell:
    """Runs statements against a cluster and prints what happens to ``out`` and ``err``.

    The client is created lazily: the first statement connects, and a failed connection is
    retried by the next statement, so an interactive session can start before its cluster is up.
    """

    def __init__(self, seeds: str | None, settings: Settings | None = None, *, out: TextIO, err: TextIO,
                 client_factory: ClientFactory = default_client_factory) -> None:
        self.seeds = seeds
        self.settings = settings or Settings()
        self.out = out
        self.err = err
        self._factory = client_factory
        self._client: QueryClient | None = None
        self._depth = 0
        self._progress_shown = False
        self._rows = 0  # rows printed by the statement running now
        self._cut = 0  # table cells the statement running now cut to max_cell
        self.output_file: output.OutputFile | None = None  # \o FILE: where rows go instead of out
        self.pager_state = output.PagerState()  # this session's: warnings given, a pager that failed
        self.fields = RecentFields()  # JSON field names of recent rows, for completion

    # --- connection ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a client is open."""
        return self._client is not None

    def connect(self, seeds: str | None = None, consistency: str | None = None) -> None:
        """Open a client on ``seeds`` (default: the current ones); keeps the old one on failure."""
        seeds = self.seeds if seeds is None else seeds
        consistency = consistency or self.settings.consistency
        if not seeds:
            raise RaftKVError("not connected: use \\connect HOST:PORT[,HOST:PORT...]")
        client = self._factory(seeds, consistency)
        self.close()
        self._client, self.seeds, self.settings.consistency = client, seeds, consistency

    def end(self) -> bool:
        """The session ends: close the client and the ``\\o`` file (:meth:`close` keeps the file: it
        is also how ``\\connect`` and Ctrl-C drop the client).  An error closing the file (its
        last flush) is reported; returns whether there was none."""
        self.close()
        file, self.output_file = self.output_file, None
        if file is None:
            return True
        try:
            file.close()
        except output.OutputError as exc:
            self.error(exc.message)
            return False
        return True

    def close(self) -> None:
        """Close the client, if any."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except (RaftKVError, OSError, RuntimeError):
                pass  # closing a client on a dead cluster must not fail the shell

    def _ensure_client(self) -> QueryClient:
        if self._client is None:
            self.connect()
        assert self._client is not None
        return self._client

    # --- output -------------------------------------------------------------------------------

    def info(self, text: str) -> None:
        """A line for the person at the shell (stdout in display formats, else stderr)."""
        stream = self.out if self.settings.format in formats.DISPLAY_FORMATS else self.err
        stream.write(text + "\n")
        stream.flush()

    def error(self, message: str, where: str = "") -> None:
        """Print an error on ``err``."""
        self._clear_progress()
        self.out.flush()
        self.err.write(f"{where}ERROR: {message}\n")
        self.err.flush()

    def _is_tty(self) -> bool:
        isatty = getattr(self.out, "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:  # closed stream
            return False

    def _show_progress(self, rows: int, elapsed: float) -> None:
        # a transient line that the next page (or the footer) overwrites: it stays visible while
        # the next page is being fetched, which is when a person wonders whether anything happens
        self.out.write(f"\r\x1b[2K-- {rows:,} row{'' if rows == 1 else 's'} so far, "
                       f"{formats.format_elapsed(elapsed)} --")
        self.out.flush()
        self._progress_shown = True

    def _clear_progress(self) -> None:
        if self._progress_shown:
            self.out.write("\r\x1b[2K")
            self._progress_shown = False

    # --- running ------------------------------------------------------------------------------

    def execute(self, statement: Any, where: str = "", at: tuple[int, int] = (1, 1)) -> Outcome:
        """Run one statement (text or a parsed statement), print its result and footer.

        ``where`` prefixes error messages (``file.sql:3: ``); ``at`` is the line and column where
        the statement starts in its script, so that error positions are given in the script.
        Ctrl-C while it runs returns CANCELLED: it closes the result, which stops the scan, and
        the client, which stops whatever the statement still runs (see :meth:`_cancelled`).
        """
        started = time.perf_counter()
        result: Result | None = None
        self._rows = self._cut = 0
        try:
            try:
                client = self._ensure_client()
            except RaftKVError as exc:
                self.error(_describe(exc, at), where)
                return Outcome.FAILED
            result = self._copy(client, statement) if _is_copy(statement) else client.query(statement)
            if result.columns:
                self._print_rows(result, started, statement)
            result.close()
        except (KeyboardInterrupt, OutputClosed):  # Ctrl-C, or the pager was quit early
            return self._cancelled(result)
        except RaftKVError as exc:
            if _interrupted(exc):
                return self._cancelled(result)
            _close_quietly(result)
            self.error(_describe(exc, at), where)
            return Outcome.FAILED
        except OSError:
            _close_quietly(result)
            raise  # e.g. a closed output pipe: the caller decides how to end
        except Exception as exc:  # a bug must not kill an interactive session and its history
            if _interrupted(exc):
                # cleanup that failed while Ctrl-C unwound the statement (a client closing a
                # generator that is still running raised RuntimeError) is still a cancellation
                return self._cancelled(result)
            _close_quietly(result)
            self.error(f"internal error: {type(exc).__name__}: {exc}", where)
            return Outcome.FAILED
        elapsed = time.perf_counter() - started if self.settings.timing else None
        assert result is not None
        self.info(formats.footer(result.status, self._rows if result.columns else None, elapsed))
        if self._cut:
            self.info(formats.cut_note(self._cut, self.settings.max_cell))
        return Outcome.OK

    def _copy(self, client: Any, statement: Any) -> Result:
        """Run a COPY here, with a progress line on a terminal's stderr (raftkv.bulk does the work)."""
        from raftkv import bulk

        from .progress import ProgressLine

        line = ProgressLine(self.err, "COPY")

        def progress(rows: int, fraction: float | None) -> None:
            self._rows = rows  # so that Ctrl-C can say how far it got
            line(rows, fraction)

        try:
            return bulk.run_copy(client, statement, progress=progress)
        except bulk.CopyInterrupted as exc:
            self._rows = exc.rows  # the rows written, the batch on its way included if it finished
            if exc.first is not None:
                line.clear()
                self.err.write(f"COPY: {exc.message}\n")
            raise
        finally:
            line.clear()

    def _cancelled(self, result: Result | None) -> Outcome:
        """Clean up after Ctrl-C stopped a statement and say so; returns CANCELLED."""
        _close_quietly(result)
        # Ctrl-C stops the wait for the statement, not its work: the client may go on running a
        # request it had sent on our behalf (a whole aggregate runs in the wait for its one page)
        # and cannot close a generator that is still running. Closing the client cancels all of
        # it; the next statement connects again.
        try:
            self.close()
        except KeyboardInterrupt:
            pass  # a second Ctrl-C while closing: the client is marked closed anyway
        self._clear_progress()
        if self._is_tty() and (result is None or result.columns):
            # the interrupted page may have stopped mid-line, and a Ctrl-C that came before the
            # first page left the terminal's echoed ^C on the current line
            self.out.write("\n")
        self.out.flush()
        shown = f" after {self._rows:,} row{'' if self._rows == 1 else 's'}" if self._rows else ""
        self.err.write(f"cancelled{shown}\n")
        self.err.flush()
        return Outcome.CANCELLED

    def _print_rows(self, result: Result, started: float, statement: Any) -> None:
        # counts into self._rows as it goes, so that a cancelled query can say how far it got
        s = self.settings
        wanted = s.format == "json" or s.keys == "timestamp"
        keys = key_columns(statement, result.columns) if wanted else frozenset()
        sink = output.open_results(self)  # the terminal, the pager or the \o file
        try:
            render = formats.renderer(s.format, result.columns, s.max_cell, tty=sink.tty, key_columns=keys,
                                      json_keys=s.json_keys, keys=s.keys, tz=s.tzinfo,
                                      screen_lines=sink.screen_lines)
            for page in result.pages():
                self.fields.observe(result.columns, page)
                text = render.page(page)
                self._clear_progress()
                sink.write(text)
                self._rows += len(page)
                elapsed = time.perf_counter() - started
                if sink.progress and elapsed >= PROGRESS_AFTER:
                    self._show_progress(self._rows, elapsed)
                else:
                    sink.flush()
            self._clear_progress()
            sink.write(render.end())
            self._cut = getattr(render, "truncated", 0)
        finally:
            sink.close()  # also when stopped: what arrived is shown, a pager is waited for

    def run_item(self, item: Item, source: str | None = None) -> Outcome:
        """Run one statement or backslash command from a script or the prompt."""
        where = f"{source}:{item.line}: " if source else ""
        if item.kind == "command":
            from .commands import run_command

            return run_command(self, item.text, where)
        return self.execute(item.text, where, (item.line, item.column))

    def run_items(self, items: Iterable[Item], source: str | None = None) -> Outcome:
        """Run items in order, stopping at the first that fails, is cancelled or quits."""
        for item in items:
            outcome = self.run_item(item, source)
            if outcome is not Outcome.OK:
                return outcome
        return Outcome.OK

    def run_text(self, text: str, source: str | None = None) -> Outcome:
        """Run every statement and command of ``text`` (stop at the first failure)."""
        return self.run_items(split_script(text), source)

    def run_lines(self, lines: Iterable[str], source: str | None = None) -> Outcome:
        """Like :meth:`run_text` on input arriving line by line: each statement runs once its ``;``
        has been read, so a producer on a pipe sees results without closing the pipe."""
        return self.run_items(iter_script(lines), source)

    def run_file(self, path: str) -> Outcome:
        """Run a script file (``-`` is standard input); paths in messages are as given."""
        if self._depth >= MAX_INCLUDE_DEPTH:
            self.error(f"{path}: files included more than {MAX_INCLUDE_DEPTH} levels deep")
            return Outcome.FAILED
        import sys

        self._depth += 1
        try:
            if path == "-":
                return self.run_lines(sys.stdin, "stdin")
            try:
                f = open(os.path.expanduser(path), encoding="utf-8")
            except OSError as exc:
                self.error(f"cannot read {path}: {exc.strerror or exc}")
                return Outcome.FAILED
            with f:
                try:
                    return self.run_lines(f, path)
                except UnicodeDecodeError as exc:
                    self.error(f"{path} is not UTF-8 text: {exc.reason}")
                    return Outcome.FAILED
        finally:
            self._depth -= 1


def relocate(message: str, details: dict[str, Any], line: int, column: int) -> str:
    """Rewrite the leading ``line L, column C: `` of an error about a statement that starts at
    ``line``/``column`` of a script so that it names the position in the script.

    The caret display below it stays as it is: it shows the statement's own line.
    """
    at_line, at_col = details.get("line"), details.get("column")
    if not isinstance(at_line, int) or not isinstance(at_col, int) or (line, column) == (1, 1):
        return message
    prefix = f"line {at_line}, column {at_col}: "
    if not message.startswith(prefix):
        return message
    new_col = at_col + column - 1 if at_line == 1 else at_col
    return f"line {at_line + line - 1}, column {new_col}: " + message[len(prefix):]


def _is_copy(statement: Any) -> bool:
    from raftkv.bulk import is_copy

    return is_copy(statement)


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while a KeyboardInterrupt was being handled (Ctrl-C)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _describe(exc: RaftKVError, at: tuple[int, int] = (1, 1)) -> str:
    # a query error's message is the whole story (with its caret); for others the kind helps
    if isinstance(exc, QueryError):
        return relocate(exc.message, exc.details, *at)
    if exc.code == "error":
        return exc.message
    return f"{exc.code}: {exc.message}"


def _close_quietly(result: Result | None) -> None:
    if result is None:
        return
    try:
        result.close()
    except (Exception, KeyboardInterrupt):
        pass  # an abandoned scan failing to close must not hide why it was abandoned
