"""The demo: a local buyer endpoint and the end-to-end run behind ``make demo``."""
