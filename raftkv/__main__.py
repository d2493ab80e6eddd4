"""``python -m raftkv`` is the ``raftkv`` command."""

from .cli import main

raise SystemExit(main())
