"""``python -m steerkit.cli``: what the ``steerkit`` command runs (the flow starts stages this way)."""

from . import main

main()
