"""Lexical helpers shared by the shell: a forgiving tokenizer and a statement splitter.

Neither needs the real parser. They only have to know where strings, comments, statements and
backslash commands begin and end, and they must never fail: they run on half-typed input (for
completion and highlighting) as often as on whole scripts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

# --- tokenizer ------------------------------------------------------------------------------------

# Order matters: a comment before the minus operator, a byte string before a bare name, a number
# before '.' and an unterminated string (no closing quote) is still one token up to the end.
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*)
  | (?P<bytes>[xX]'[^']*'?)
  | (?P<string>'(?:[^']|'')*'?)
  | (?P<number>0[xX]\w*|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>->>|->|<=|>=|<>|!=|[=<>+\-*/])
  | (?P<punct>[(),;])
    """,
    re.VERBOSE,
)
_COMMAND_RE = re.compile(r"\\[^\n]*")


@dataclass(frozen=True)
class Token:
    """One lexical token: ``kind`` is ws, comment, bytes, string, number, word, op, punct, command
    or other (a character the language does not know)."""

    kind: str
    text: str
    start: int

    @property
    def end(self) -> int:
        """Offset just past the token."""
        return self.start + len(self.text)

    @property
    def significant(self) -> bool:
        """Whether the token matters to the grammar (not whitespace or a comment)."""
        return self.kind not in ("ws", "comment")

    @property
    def closed(self) -> bool:
        """False for a string or byte string whose closing quote is missing."""
        if self.kind == "string":
            return len(self.text) >= 2 and _string_closed(self.text)
        if self.kind == "bytes":
            return len(self.text) >= 3 and self.text.endswith("'")
        return True


def _string_closed(text: str) -> bool:
    # inside the quotes, quotes come in pairs ('') when the string is closed
    return text.endswith("'") and text[1:-1].count("'") % 2 == 0


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens covering it entirely (concatenating their texts gives ``text``).

    A backslash at the start of a statement begins a command running to the end of the line,
    exactly as :class:`ScriptSplitter` reads it.
    """
    tokens: list[Token] = []
    pos = 0
    at_statement_start = True
    while pos < len(text):
        if at_statement_start and text[pos] == "\\":
            m = _COMMAND_RE.match(text, pos)
            assert m is not None
            tokens.append(Token("command", m.group(), pos))
            pos = m.end()
            continue
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            tokens.append(Token("other", text[pos], pos))
            pos += 1
            at_statement_start = False
            continue
        token = Token(m.lastgroup or "other", m.group(), pos)
        tokens.append(token)
        pos = m.end()
        if token.kind == "punct" and token.text == ";":
            at_statement_start = True
        elif token.significant:
            at_statement_start = False
    return tokens


# --- statement splitter ---------------------------------------------------------------------------


class _State(Enum):
    NORMAL = "normal"
    STRING = "string"
    COMMENT = "comment"
    COMMAND = "command"


@dataclass(frozen=True)
class Item:
    """One unit of a script: a statement (without its ``;``) or a backslash command line.

    ``text`` starts at the statement's first character that is not blank or part of a comment,
    and ``line``/``column`` (1-based) say where that character is in the whole script, so that
    positions in errors about ``text`` can be turned into positions in the script. ``terminated``
    is False for a statement that ended with the input rather than with ``;``.
    """

    kind: str  # "statement" or "command"
    text: str
    line: int = 1
    column: int = 1
    terminated: bool = True


_NORMAL_STOP = re.compile(r"--|[';\\]")


def _position_after(line: int, column: int, text: str) -> tuple[int, int]:
    """Where the next character is after ``text``, which began at ``line``/``column``."""
    newlines = text.count("\n")
    if newlines:
        return line + newlines, len(text) - text.rfind("\n")
    return line, column + len(text)


class ScriptSplitter:
    """Cut a script into statements at ``;`` outside strings and comments, fed piece by piece.

    Feeding line by line lets a script arriving on a pipe run each statement as soon as its
    ``;`` arrives, and only the unfinished statement is ever held. A line whose first non-blank
    character (outside a statement) is ``\\`` is a backslash command.
    """

    def __init__(self) -> None:
        self._state = _State.NORMAL
        self._buf: list[str] = []  # text fed since the last statement or command ended
        self._buf_len = 0
        self._line = 1  # position of the next character fed
        self._col = 1
        # offset in the buffer, line and column of the current statement's first significant character
        self._content: tuple[int, int, int] | None = None
        self._command_at = (1, 1)
        self._held = ""  # input kept back until the next feed shows what it is

    @property
    def pending(self) -> bool:
        """Whether a statement or command has begun and not yet ended."""
        return self._content is not None or self._state is _State.COMMAND or bool(self._held)

    @property
    def in_string(self) -> bool:
        """Whether the input so far ends inside a string literal."""
        return self._state is _State.STRING

    @property
    def in_comment(self) -> bool:
        """Whether the input so far ends inside a ``--`` comment."""
        return self._state is _State.COMMENT

    @property
    def in_command(self) -> bool:
        """Whether the input so far ends inside a backslash command line."""
        return self._state is _State.COMMAND

    @property
    def current(self) -> str:
        """The text of the unfinished statement or command (what has been fed since the last end)."""
        return "".join(self._buf) + self._held

    def _take(self, text: str) -> None:
        self._buf.append(text)
        self._buf_len += len(text)
        self._line, self._col = _position_after(self._line, self._col, text)

    def _mark_content(self, lead: str = "") -> None:
        """The statement's first significant character comes after ``lead`` (about to be taken)."""
        if self._content is None:
            line, col = _position_after(self._line, self._col, lead)
            self._content = (self._buf_len + len(lead), line, col)

    def _reset(self) -> None:
        self._buf = []
        self._buf_len = 0
        self._content = None
        self._state = _State.NORMAL

    def _statement(self, terminated: bool) -> Item:
        assert self._content is not None
        offset, line, col = self._content
        return Item("statement", "".join(self._buf)[offset:].rstrip(), line, col, terminated)

    def _command(self) -> Item:
        return Item("command", "".join(self._buf).strip(), *self._command_at)

    def feed(self, text: str) -> list[Item]:
        """Consume more input; return the statements and commands it completed."""
        out: list[Item] = []
        text, self._held = self._held + text, ""
        pos, n = 0, len(text)
        while pos < n:
            state = self._state
            if state is _State.NORMAL:
                m = _NORMAL_STOP.search(text, pos)
                end = m.start() if m else n
                if m is None and text.endswith("-"):
                    # a '-' at the very end may be the first half of a '--' comment: wait and see
                    end = n - 1
                    self._held = "-"
                segment = text[pos:end]
                if self._content is None and segment.strip():
                    self._mark_content(segment[:len(segment) - len(segment.lstrip())])
                self._take(segment)
                pos = end
                if m is None:
                    break
                stop = m.group()
                pos += len(stop)
                if stop == ";":
                    if self._content is not None:
                        out.append(self._statement(True))
                    self._take(";")
                    self._reset()
                elif stop == "'":
                    self._mark_content()
                    self._state = _State.STRING
                    self._take(stop)
                elif stop == "--":
                    self._state = _State.COMMENT
                    self._take(stop)
                elif self._content is None:  # a backslash before anything else: a command
                    self._reset()
                    self._command_at = (self._line, self._col)
                    self._state = _State.COMMAND
                    self._take(stop)
                else:  # a stray backslash inside a statement: the parser will complain
                    self._take(stop)
            elif state is _State.STRING:
                end = text.find("'", pos)
                if end < 0:
                    self._take(text[pos:])
                    break
                # a doubled quote ('') reads as close-then-reopen, which splits the same way
                self._take(text[pos:end + 1])
                self._state = _State.NORMAL
                pos = end + 1
            else:  # a comment or a command line, both ending at the newline
                end = text.find("\n", pos)
                if end < 0:
                    self._take(text[pos:])
                    break
                self._take(text[pos:end])
                if state is _State.COMMAND:
                    out.append(self._command())
                    self._take("\n")
                    self._reset()
                else:
                    self._take("\n")
                    self._state = _State.NORMAL
                pos = end + 1
        return out

    def finish(self) -> list[Item]:
        """End of input: return the unterminated trailing statement or command, if any."""
        out: list[Item] = []
        if self._held:
            self._mark_content()
            self._take(self._held)
            self._held = ""
        if self._state is _State.COMMAND:
            out.append(self._command())
        elif self._content is not None:
            out.append(self._statement(False))
        self._reset()
        return out


def split_script(text: str) -> list[Item]:
    """Every statement and command of ``text``, in order (empty statements are dropped)."""
    splitter = ScriptSplitter()
    return splitter.feed(text) + splitter.finish()


def iter_script(chunks: Iterable[str]) -> Iterator[Item]:
    """Like :func:`split_script` over input arriving in pieces (lines of a pipe): each item is
    yielded as soon as it is complete, so a statement runs before later input is read."""
    splitter = ScriptSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.finish()


def is_complete(text: str) -> bool:
    """Whether pressing Enter after ``text`` should run it.

    True when the text ends with ``;`` outside any string or comment (trailing blanks and
    comments allowed), when it is a backslash command line, or when it is blank.
    """
    splitter = ScriptSplitter()
    splitter.feed(text)
    return splitter.in_command or not splitter.pending
