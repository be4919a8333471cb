"""One module per scenario; each child-run one exposes ``run_round(params) -> figures``."""
