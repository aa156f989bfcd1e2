"""``python -m selfseg``: the command line of ``selfseg.cli``."""

from selfseg.cli import main

raise SystemExit(main())
