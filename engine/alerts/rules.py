"""Alert rules as a flow declares them (``alerts:`` in the flow YAML), validated data.

In the flow rather than a separate alerts file: a rule names the flow's steps (checked
when the flow is applied, with the line), its automated response edits the flow itself
(a source's cap), and the flow registry is the one store of configuration, with its
versions. A webhook's secret is named (an environment variable or a file), never held.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, HttpUrl, field_validator, model_validator

from engine.model import ConfigModel
from engine.steps.calls import CallAuth, no_credentials_in_url

# What a rule measures, per what:
#   rejection_rate         % of the flow's completed leads that did not succeed   (flow)
#   source_rejection_rate  % of the source's decisions that were rejections     (source step)
#   buyer_acceptance       % of a recipient's deliveries the buyer accepted     (recipient step)
#   avg_step_ms            mean duration (``ms``) of a step's decisions         (each step)
Metric = Literal["rejection_rate", "source_rejection_rate", "buyer_acceptance", "avg_step_ms"]
RATE_METRICS = frozenset({"rejection_rate", "source_rejection_rate", "buyer_acceptance"})


class WebhookSettings(ConfigModel):
    """Where an alert's triggering and resolution are POSTed (JSON), and with what secret."""

    url: HttpUrl
    auth: CallAuth | None = None
    timeout_ms: Annotated[int, Field(ge=100, le=60_000)] = 5000
    # A failing webhook is retried with backoff this many times, then given up (recorded).
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 8

    _no_credentials = field_validator("url")(no_credentials_in_url)


class LowerSourceCap(ConfigModel):
    """The seed's automated response to a bad source: its caps' maximums times ``factor``
    (never under ``minimum``), recorded as a new version of the flow."""

    factor: Annotated[float, Field(gt=0, lt=1)] = 0.5
    minimum: Annotated[int, Field(ge=1)] = 1


class AlertRule(ConfigModel):
    """One rule: a metric over a sliding window, a trigger threshold and a resolve one.

    Hysteresis two ways: the alert resolves only on the healthy side of ``resolve`` (a
    value between the two thresholds changes nothing), and each side must hold for
    ``trigger_after_s`` / ``resolve_after_s`` before the alert changes state. Rates are
    percentages (``above: 30`` is 30 %), durations milliseconds. Fewer than ``min_events``
    in the window decide nothing (one rejection of one lead is not 100 %); none at all
    resolves a firing alert (the traffic it was about has stopped).
    """

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    metric: Metric
    above: float | None = None
    below: float | None = None
    resolve: float | None = None
    window_minutes: Annotated[int, Field(ge=1, le=1440)] = 60
    min_events: Annotated[int, Field(ge=1)] = 10
    trigger_after_s: Annotated[int, Field(ge=0, le=86_400)] = 0
    resolve_after_s: Annotated[int, Field(ge=0, le=86_400)] = 0
    # Steps the rule watches (source, recipient or any step by metric); empty: all that apply.
    steps: list[str] = Field(default_factory=list)
    webhook: WebhookSettings | None = None
    lower_source_cap: LowerSourceCap | None = None

    @model_validator(mode="after")
    def _thresholds(self) -> AlertRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("a rule needs exactly one of above or below")
        if self.lower_source_cap is not None and self.metric != "source_rejection_rate":
            raise ValueError("lower_source_cap is the response to source_rejection_rate only")
        if self.resolve is not None:
            if self.above is not None and self.resolve > self.above:
                raise ValueError(f"resolve ({self.resolve:g}) must be at or below above")
            if self.below is not None and self.resolve < self.below:
                raise ValueError(f"resolve ({self.resolve:g}) must be at or above below")
        return self

    @property
    def window_ms(self) -> int:
        return self.window_minutes * 60_000

    @property
    def threshold(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]  # one is set: _thresholds

    @property
    def resolve_threshold(self) -> float:
        return self.resolve if self.resolve is not None else self.threshold

    def describe(self, value: float | None) -> str:
        """``rejection_rate 42.1 % > 30 % over 60 min``: the reason an event or a person reads."""
        unit = " %" if self.metric in RATE_METRICS else " ms"
        op = ">" if self.above is not None else "<"
        shown = "no data" if value is None else f"{value:.1f}{unit}"
        return f"{self.metric} {shown} {op} {self.threshold:g}{unit} over {self.window_minutes} min"
