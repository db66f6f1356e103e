"""``python -m pruneopt``: the command line (same as the ``pruneopt`` script)."""

import sys

from pruneopt.cli import main

sys.exit(main())
