"""`python -m headscope` runs the command line."""

import sys

from headscope.cli import main

sys.exit(main())
