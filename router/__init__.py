"""fusion-router: an OpenAI-compatible LLM routing sidecar with breakers, policy and fusion."""

import os
from pathlib import Path

from router.native import install as _install_compiled_modules

__version__ = "0.1.0"
__all__ = ["__version__"]

# The span modules run compiled when their build matches the source (router/native.py).
_install_compiled_modules(Path(__file__).parent, os.environ)
