"""`python -m ops.bench [--quick]` from the repository root: see ops/bench/README.md."""

import sys

from ops.bench.harness import main

sys.exit(main())
