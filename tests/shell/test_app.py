"""The real PromptSession driven through a pipe: multi-line entry, Tab completion, Ctrl-C, Ctrl-D."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from shell import app
from shell.app import make_history, make_session, run_interactive, wants_run
from shell.runner import Settings, Shell

from .fakes import Factory, FakeClient

pytestmark = pytest.mark.timeout(120)

CTRL_C, CTRL_D, ENTER, TAB, ESC = "\x03", "\x04", "\r", "\t", "\x1b"
Step = tuple[Callable[[], bool] | None, str]


class Session:
    """A Shell on a fake client and a PromptSession reading keys from a pipe."""

    def __init__(self, inp, complete_while_typing: bool = False, history=None) -> None:
        self.inp = inp
        self.factory = Factory()
        self.db: FakeClient = self.factory.client
        self.shell = Shell("h:1", Settings(format="csv", timing=False), out=io.StringIO(), err=io.StringIO(),
                           client_factory=self.factory)
        self.session = make_session(self.shell, history=history or InMemoryHistory(), input=inp,
                                    output=DummyOutput(), complete_while_typing=complete_while_typing)
        self.prompts = 0
        real_prompt = self.session.prompt

        def counting_prompt(*args, **kwargs):
            self.prompts += 1
            return real_prompt(*args, **kwargs)

        self.session.prompt = counting_prompt  # type: ignore[method-assign]

    @property
    def text(self) -> str:
        return self.session.default_buffer.text

    def at_prompt(self, n: int) -> Callable[[], bool]:
        """True once the n-th prompt is up and its app is running."""
        return lambda: self.prompts >= n and self.session.app.is_running

    def run(self, steps: list[Step], timeout: float = 20.0) -> tuple[int, list[str]]:
        """Send each step's keys once its condition holds, while run_interactive runs here."""
        failures: list[str] = []

        def drive() -> None:
            for cond, keys in steps:
                deadline = time.monotonic() + timeout
                while cond is not None and not cond():
                    if time.monotonic() > deadline:
                        failures.append(f"timed out before sending {keys!r}; buffer {self.text!r}")
                        self.inp.send_text(CTRL_C + CTRL_D)
                        return
                    time.sleep(0.01)
                time.sleep(0.05)  # let the app settle after the condition became true
                self.inp.send_text(keys)

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        code = run_interactive(self.shell, self.session)
        driver.join(timeout)
        return code, failures

    def out(self) -> str:
        return self.shell.out.getvalue()  # type: ignore[attr-defined]


@contextmanager
def session(**kwargs) -> Iterator[Session]:
    with create_pipe_input() as inp:
        yield Session(inp, **kwargs)


def test_enter_runs_only_a_finished_statement() -> None:
    with session() as s:
        code, failures = s.run([
            (s.at_prompt(1), "PUT 1" + ENTER),  # not finished: a newline
            (lambda: s.text == "PUT 1\n", "  'a'; -- done" + ENTER),
            (s.at_prompt(2), "SELECT * FROM kv;" + ENTER),
            (s.at_prompt(3), CTRL_D),
        ])
    assert failures == [] and code == 0
    assert s.db.queries == ["PUT 1\n  'a'", "SELECT * FROM kv"]
    assert s.out().endswith("key,value\n1,a\n")


def test_strings_and_comments_hide_semicolons_from_enter() -> None:
    with session() as s:
        code, failures = s.run([
            (s.at_prompt(1), "PUT 1 'x;" + ENTER),  # inside a string: newline
            (lambda: s.text == "PUT 1 'x;\n", "y' -- ;" + ENTER),  # inside a comment: newline
            (lambda: s.text.endswith("-- ;\n"), ";" + ENTER),
            (s.at_prompt(2), CTRL_D),
        ])
    assert failures == [] and code == 0
    assert s.db.queries == ["PUT 1 'x;\ny' -- ;"]


def test_escape_enter_runs_an_unfinished_statement() -> None:
    with session() as s:
        code, failures = s.run([(s.at_prompt(1), "GET 1"), (lambda: s.text == "GET 1", ESC + ENTER),
                                (s.at_prompt(2), CTRL_D)])
    assert failures == [] and s.db.queries == ["GET 1"]


def test_tab_completes() -> None:
    with session() as s:
        code, failures = s.run([
            (s.at_prompt(1), "sel" + TAB),
            (lambda: s.text == "select", " * fr" + TAB),
            (lambda: s.text == "select * from", " kv;" + ENTER),
            (s.at_prompt(2), "\\for" + TAB),
            (lambda: s.text == "\\format", " j" + TAB),
            (lambda: s.text == "\\format json", ENTER),
            (s.at_prompt(3), CTRL_D),
        ])
    assert failures == [] and code == 0
    assert s.db.queries == ["select * from kv"]
    assert s.shell.settings.format == "json"


def test_enter_on_a_highlighted_completion_accepts_it_without_running() -> None:
    with session(complete_while_typing=True) as s:
        code, failures = s.run([
            (s.at_prompt(1), "SHOW S"),
            (lambda: s.session.default_buffer.complete_state is not None, TAB),  # highlight SHARDS
            (lambda: s.text == "SHOW SHARDS", ENTER),
            (lambda: s.session.default_buffer.complete_state is None and s.text == "SHOW SHARDS", ";" + ENTER),
            (s.at_prompt(2), CTRL_D),
        ])
    assert failures == [] and code == 0
    assert s.db.queries == ["SHOW SHARDS"]


def test_ctrl_c_clears_the_input_and_ctrl_d_exits() -> None:
    with session() as s:
        code, failures = s.run([
            (s.at_prompt(1), "SELECT * FROM"),
            (lambda: s.text == "SELECT * FROM", CTRL_C),
            (s.at_prompt(2), "GET 1;" + ENTER),
            (s.at_prompt(3), CTRL_D),
        ])
    assert failures == [] and code == 0
    assert s.db.queries == ["GET 1"]
    assert s.prompts == 3


def test_quit_words_and_backslash_q() -> None:
    for word in ("\\q", "quit", "exit"):
        with session() as s:
            code, failures = s.run([(s.at_prompt(1), word + ENTER)])
        assert failures == [] and code == 0 and s.prompts == 1
    assert wants_run("quit") and wants_run("\\q") and not wants_run("quitt")


def test_errors_are_printed_and_the_session_continues() -> None:
    with session() as s:
        code, failures = s.run([
            (s.at_prompt(1), "SELECT * FORM kv;" + ENTER),
            (s.at_prompt(2), "\\nosuch" + ENTER),
            (s.at_prompt(3), "GET 1;" + ENTER),
            (s.at_prompt(4), CTRL_D),
        ])
    assert failures == [] and code == 0
    err = s.shell.err.getvalue()
    assert "unexpected name 'FORM'" in err and "           ^" in err and "unknown command \\nosuch" in err
    assert s.db.queries[-1] == "GET 1"


def test_history_is_kept_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "hist"
    with session(history=FileHistory(str(path))) as s:
        s.run([(s.at_prompt(1), "GET 1;" + ENTER), (s.at_prompt(2), CTRL_D)])
    assert "GET 1;" in path.read_text()
    with session(history=FileHistory(str(path))) as s:  # a new session recalls it with Up
        s.run([(s.at_prompt(1), "\x1b[A"), (lambda: s.text == "GET 1;", ENTER), (s.at_prompt(2), CTRL_D)])
    assert s.db.queries == ["GET 1"]


def test_history_path_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(app.HISTORY_ENV, str(tmp_path / "h"))
    assert app.history_path() == str(tmp_path / "h")
    monkeypatch.setenv(app.HISTORY_ENV, "")
    assert app.history_path() is None
    assert isinstance(make_history(None), InMemoryHistory)
    monkeypatch.delenv(app.HISTORY_ENV)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert app.history_path() == str(tmp_path / ".raftkv_history")
    # an unwritable history file only loses history, it never breaks the prompt
    unwritable = make_history(str(tmp_path / "no" / "such" / "dir" / "h"))
    unwritable.store_string("GET 1;")
    assert list(unwritable.load_history_strings()) == []
