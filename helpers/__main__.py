"""``python -m helpers <command>``: the terminal route (``helpers.cli``); ``--help`` lists the commands."""

from .cli import main

raise SystemExit(main())
