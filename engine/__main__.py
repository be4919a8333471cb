"""``python -m engine`` is the ``leadflow`` command."""

from engine.cli import main

main()
