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


class KafkaUnreachableError(StackUnavailableError):
    """No Kafka broker answered a short probe: said in one line, naming the bootstrap servers,
    before a command waits out librdkafka's own timeouts (tens of seconds, pages of logs)."""

    def __init__(self, servers: str, cause: str | None = None) -> None:
        self.servers = servers
        self.cause = cause
        super().__init__(f"Kafka at {servers} is not reachable" + (f" ({cause})" if cause else ""))


class TransientStepError(LeadflowError):
    """A step cannot decide right now (its state store is unreachable): the worker aborts
    the open transaction, rewinds to the last commit and tries again after a backoff -
    never skipping the lead and never deciding without the state it needs."""
