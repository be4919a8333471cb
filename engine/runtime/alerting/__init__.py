"""The alert evaluator's I/O: the flow's event topics in, Postgres state and actions out.

``evaluator`` reads and decides (``engine.alerts``), committing with its offsets;
``actions`` carries out what the decisions owe (``webhook``, ``source_caps``) beside it.
"""
