"""Syntax highlighting for the prompt: keywords, functions, columns, strings, numbers, comments and
backslash commands, from the shell's own tokenizer (no pygments)."""

from __future__ import annotations

from collections.abc import Callable

from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.lexers import Lexer

from .completion import FUNCTIONS, KEYWORDS
from .tokens import Token, tokenize

STYLE_RULES = {
    "keyword": "bold ansiblue",
    "function": "ansicyan",
    "column": "ansimagenta",
    "string": "ansigreen",
    "number": "ansiyellow",
    "comment": "italic ansibrightblack",
    "command": "bold ansimagenta",
    "operator": "",
    "error": "bg:ansired ansiwhite",
    "prompt": "bold ansigreen",
    "continuation": "ansibrightblack",
    "bottom-toolbar": "noreverse bg:ansibrightblack ansiblack",
}


def token_style(token: Token, next_text: str = "") -> str:
    """The style class of one token (``next_text`` is the next significant token, to tell a
    function call from a name)."""
    kind = token.kind
    if kind == "word":
        word = token.text.upper()
        if word in ("KEY", "VALUE"):
            return "class:column"
        if word in KEYWORDS:
            return "class:keyword"
        if token.text.lower() in FUNCTIONS and next_text == "(":
            return "class:function"
        return ""
    if kind in ("string", "bytes"):
        return "class:string" if token.closed else "class:error"
    return {"number": "class:number", "comment": "class:comment", "command": "class:command",
            "op": "class:operator", "other": "class:error"}.get(kind, "")


def highlight(text: str) -> list[StyleAndTextTuples]:
    """Styled fragments of ``text``, one list per line (a token spanning lines is split)."""
    tokens = tokenize(text)
    significant = [i for i, t in enumerate(tokens) if t.significant]
    following = {a: tokens[b].text for a, b in zip(significant, significant[1:], strict=False)}
    lines: list[StyleAndTextTuples] = [[]]
    for i, token in enumerate(tokens):
        style = token_style(token, following.get(i, ""))
        parts = token.text.split("\n")
        for n, part in enumerate(parts):
            if n:
                lines.append([])
            if part:
                lines[-1].append((style, part))
    return lines


class QueryLexer(Lexer):
    """prompt_toolkit lexer over :func:`highlight`."""

    def lex_document(self, document: Document) -> Callable[[int], StyleAndTextTuples]:
        """A function from line number to that line's styled fragments."""
        lines = highlight(document.text)

        def get_line(lineno: int) -> StyleAndTextTuples:
            return lines[lineno] if 0 <= lineno < len(lines) else []

        return get_line
