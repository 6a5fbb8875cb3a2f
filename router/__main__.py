"""`python -m router`: the same program as the `fusion-router` console script."""

import sys

from router.cli import main

sys.exit(main())
