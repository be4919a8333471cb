"""What one scenario hands back: its rounds' figures, its settings and notes, or its error."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from bench.stats import Summary, summarize


@dataclass
class ScenarioResult:
    """Rounds of named figures; ``primary`` names the one the table and ratios use."""

    name: str
    primary: str
    unit: str
    rounds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    units: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Measurements over time within a round (e.g. RSS every N events), by name.
    series: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, figures: dict[str, float], units: dict[str, str] | None = None) -> None:
        """Record one round's figures (a round may report several)."""
        for key, value in figures.items():
            self.rounds[key].append(float(value))
        self.units.update(units or {})

    def summary(self, figure: str | None = None) -> Summary | None:
        return summarize(self.rounds.get(figure or self.primary, []))

    def as_dict(self) -> dict[str, Any]:
        figures = {}
        for key, values in self.rounds.items():
            summary = summarize(values)
            if summary is not None:
                unit = self.unit if key == self.primary else self.units.get(key, "")
                figures[key] = {**summary.as_dict(), "unit": unit}
        return {
            "primary": self.primary,
            "unit": self.unit,
            "figures": figures,
            "settings": self.settings,
            "notes": self.notes,
            "errors": self.errors,
            **({"series": self.series} if self.series else {}),
        }
