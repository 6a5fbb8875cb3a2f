"""`python -m router`: the same program as the `fusion-router` console script."""

import sys

from router.cli import main

if __name__ == "__main__":  # not when a spawned child (the span exporter) imports this module
    sys.exit(main())
