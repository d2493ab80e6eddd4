"""The raftkv shell: ``raftkv shell`` and ``raftkv up``.

Usage::

    raftkv up [--data-dir ./raftkv-data] [--nodes 3] [--shards 12]   # start or reuse a local cluster, open the shell
    raftkv shell [--connect HOST:PORT,...] [--data-dir DIR] [--format table|vertical|json|csv]
                 [--keys int|timestamp] [--timezone ZONE]
                 [-e "STATEMENTS"] [-f FILE] [--consistency linearizable|serializable] [--no-timing]
                 [--no-pager]

The shell is interactive when standard input is a terminal and neither ``-e`` nor ``-f`` is
given. Otherwise it runs ``-e``/``-f`` (in command-line order) or standard input, and stops at
the first statement that fails (exit status 1; 130 after Ctrl-C). Rows go to stdout; errors go
to stderr, and so do the row-count/timing lines of the csv and json formats, so that stdout
holds data only. The default format is ``table`` on a terminal and ``csv`` otherwise.

Interactively, Enter runs the input once it ends with ``;`` outside strings and comments (else
it starts a new line; Esc Enter runs it anyway); Tab completes keywords, functions, commands and
file names; Ctrl-C clears the input or cancels a running query; Ctrl-D quits. History is kept in
``~/.raftkv_history`` (``$RAFTKV_HISTORY`` overrides; set it empty for none). Backslash commands:
``\\?``, ``\\connect``, ``\\format``, ``\\jsonkeys``, ``\\keys``, ``\\timezone``, ``\\x``, ``\\timing``,
``\\consistency``, ``\\o [FILE]``, ``\\pager``, ``\\colwidth N``, ``\\i FILE``, ``\\q``. On a terminal, results
taller than the screen go through ``$PAGER`` (``less -S`` by default) unless ``\\pager off`` or
``--no-pager``.

Modules:

* ``tokens``: tokenizer and statement splitter (strings, comments, backslash commands);
* ``formats``: table, vertical, JSON-lines and CSV output, streamed a page at a time;
* ``runner``: runs statements and commands, prints results, keeps the settings;
* ``output``: where rows go (the terminal, the pager, a ``\\o`` file); ``pager``: the pager process;
* ``fields``: JSON field names of recent results, for completion;
* ``commands``: backslash commands;
* ``completion``, ``lexer``, ``app``: the interactive prompt (the only users of prompt_toolkit);
* ``cli``: the command-line entry points.
"""
