"""``python -m orchestrator`` is the ``orchestratord`` command."""

from .cli import main

main()
