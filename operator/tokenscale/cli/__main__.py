"""`python -m tokenscale.cli`: the `tokenscale` command, as the console script runs it."""

import sys

from tokenscale.cli import main

sys.exit(main())
