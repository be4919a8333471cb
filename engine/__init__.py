"""leadflow's flow engine: flow definitions, step decisions and the Kafka runtime."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("leadflow")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
