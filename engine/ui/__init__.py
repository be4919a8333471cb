"""The operator UI: pages under ``/ui`` that load their data from ``/ui/api``, key in the header."""
