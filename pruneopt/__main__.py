import sys

from pruneopt.cli import main

sys.exit(main())
