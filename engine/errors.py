"""One error root for leadflow, so callers can catch what they can handle."""


class LeadflowError(Exception):
    """Root of every error leadflow raises on purpose."""


class ConfigError(LeadflowError):
    """Settings or a flow definition are wrong; raised before any work starts."""


class FlowConfigError(ConfigError):
    """A flow definition is invalid. Carries the file and the offending field."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: invalid flow definition:\n  " + "\n  ".join(problems))


class StackUnavailableError(LeadflowError):
    """A service the worker needs (Kafka, Postgres, object storage) cannot be reached."""
