"""`python -m headscope.cli` runs the command line."""

import sys

from headscope.cli import main

sys.exit(main())
