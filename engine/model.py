"""The base of every configuration model: frozen, and strict about unknown keys."""

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """Unknown keys are errors (a typo in a flow file must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
