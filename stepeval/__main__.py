"""``python -m stepeval``: the same command as the ``stepeval`` script."""

import sys

from stepeval.cli import main

sys.exit(main())
