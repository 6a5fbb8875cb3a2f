"""fusion-router: an OpenAI-compatible LLM routing sidecar with breakers, policy and fusion."""

__version__ = "0.1.0"
__all__ = ["__version__"]
