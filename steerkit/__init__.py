"""steerkit: make, check and ship LLM steering vectors with BiPO."""

__version__ = "0.1.0"
