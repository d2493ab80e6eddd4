"""The interactive session: a prompt_toolkit ``PromptSession`` around :class:`shell.runner.Shell`.

Enter runs the buffer only once it ends with ``;`` (outside strings and comments) or is a
backslash command; otherwise it starts a new line under a continuation prompt. Esc then Enter
runs the buffer as it is. Ctrl-C clears the input (or cancels a running query), Ctrl-D quits.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.enums import DEFAULT_BUFFER
from prompt_toolkit.filters import has_focus
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import Output, create_output
from prompt_toolkit.styles import Style

from raftkv.errors import RaftKVError

from .completion import QueryCompleter
from .lexer import STYLE_RULES, QueryLexer
from .runner import Outcome, Shell
from .tokens import is_complete, split_script

PROMPT = "raftkv> "
QUIT_WORDS = frozenset({"quit", "exit", "\\q"})
HISTORY_ENV = "RAFTKV_HISTORY"
BANNER = "raftkv shell. Statements end with ';'. \\? for help, \\q or Ctrl-D to quit.\n"


def history_path() -> str | None:
    """``$RAFTKV_HISTORY`` if set (empty: no history file), else ``~/.raftkv_history``."""
    env = os.environ.get(HISTORY_ENV)
    if env is not None:
        return os.path.expanduser(env) or None
    return os.path.join(os.path.expanduser("~"), ".raftkv_history")


class _TolerantFileHistory(FileHistory):
    """File history that degrades to memory-only when the file cannot be read or written
    (a read-only home must not make every Enter raise)."""

    def load_history_strings(self) -> Iterable[str]:
        try:
            yield from super().load_history_strings()
        except (OSError, UnicodeDecodeError):
            return

    def store_string(self, string: str) -> None:
        try:
            super().store_string(string)
        except OSError:
            pass


def make_history(path: str | None) -> History:
    """History kept in ``path`` across sessions, or in memory only when ``path`` is None."""
    return InMemoryHistory() if path is None else _TolerantFileHistory(path)


def wants_run(text: str) -> bool:
    """Whether Enter should run ``text`` rather than insert a newline."""
    return text.strip().lower() in QUIT_WORDS or is_complete(text)


def key_bindings() -> KeyBindings:
    """Enter runs a finished statement or inserts a newline; Esc Enter always runs."""
    kb = KeyBindings()

    @kb.add("enter", filter=has_focus(DEFAULT_BUFFER))
    def _enter(event: KeyPressEvent) -> None:
        buf = event.current_buffer
        state = buf.complete_state
        if state is not None and state.current_completion is not None:
            buf.complete_state = None  # Enter on a highlighted completion accepts it, runs nothing
            return
        if wants_run(buf.document.text):
            buf.validate_and_handle()
        else:
            buf.insert_text("\n")

    @kb.add("escape", "enter", filter=has_focus(DEFAULT_BUFFER))
    def _force_run(event: KeyPressEvent) -> None:
        event.current_buffer.validate_and_handle()

    return kb


def _continuation(width: int, line_number: int, wrap_count: int) -> StyleAndTextTuples:
    return [("class:continuation", "-> ".rjust(width))]


def _toolbar(shell: Shell) -> StyleAndTextTuples:
    s = shell.settings
    where = shell.seeds or "not connected"
    fmt = f"json (keys: {s.json_keys}s)" if s.format == "json" else s.format
    to = f"  output: {shell.output_file.path}" if shell.output_file is not None else ""
    return [("class:bottom-toolbar",
             f" {where}  reads: {s.consistency}  format: {fmt}{to}  keys: {s.keys}  tz: {s.timezone}"
             f"  timing: {'on' if s.timing else 'off'}   \\? help  Ctrl-D quit ")]


def make_session(shell: Shell, *, history: History | None = None, input: Input | None = None,
                 output: Output | None = None, complete_while_typing: bool = True,
                 toolbar: bool = True) -> PromptSession[str]:
    """The prompt: multi-line, highlighted, completing, with history."""
    return PromptSession(
        message=[("class:prompt", PROMPT)],
        multiline=True,
        prompt_continuation=_continuation,
        lexer=QueryLexer(),
        completer=QueryCompleter(shell.fields),
        complete_while_typing=complete_while_typing,
        history=history if history is not None else make_history(history_path()),
        auto_suggest=AutoSuggestFromHistory(),
        key_bindings=key_bindings(),
        style=Style.from_dict(STYLE_RULES),
        include_default_pygments_style=False,
        bottom_toolbar=(lambda: _toolbar(shell)) if toolbar else None,
        input=input,
        # draw on whichever of stdout/stderr is the terminal: `raftkv shell > rows.txt` still prompts
        output=output if output is not None else create_output(always_prefer_tty=True),
    )


@contextlib.contextmanager
def _saying_connecting(shell: Shell) -> Iterator[None]:
    """Show "connecting to SEEDS ..." while the block runs (on a terminal only), erased after it.

    The first connection can take up to the client's deadline (a node that does not answer), and
    a silent terminal looks hung; the line goes before "connected" or the error is printed.
    """
    tty = shell._is_tty()
    if tty:
        shell.out.write(f"connecting to {shell.seeds} ...")
        shell.out.flush()
    try:
        yield
    finally:
        if tty:
            shell.out.write("\r\x1b[2K")
            shell.out.flush()


def run_interactive(shell: Shell, session: PromptSession[str] | None = None) -> int:
    """Read, run and print until Ctrl-D or ``\\q``; returns the exit status (0)."""
    session = session or make_session(shell)
    shell.out.write(BANNER)
    if shell.seeds:
        try:
            with _saying_connecting(shell):
                shell.connect()
            shell.out.write(f"connected to {shell.seeds} ({shell.settings.consistency})\n")
        except RaftKVError as exc:  # keep going: the next statement retries, or use \connect
            shell.error(f"cannot connect to {shell.seeds}: {exc.message}")
        except KeyboardInterrupt:
            shell.err.write("connection attempt cancelled\n")
    shell.out.flush()
    while True:
        try:
            text = session.prompt()
        except KeyboardInterrupt:
            continue  # Ctrl-C at the prompt: drop the input, prompt again
        except EOFError:
            break
        if text.strip().lower() in QUIT_WORDS:
            break
        try:
            outcome = shell.run_items(split_script(text))
        except KeyboardInterrupt:  # between statements of one buffer
            shell.err.write("cancelled\n")
            continue
        if outcome is Outcome.QUIT:
            break
    return 0
