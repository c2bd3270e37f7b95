"""The metrics as a test reads them: a /metrics page parsed into samples."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """One /metrics page: each sample by name and labels (`labels` as "k=v,k=v", names sorted)."""

    def __init__(self, text: str):
        self.samples: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[s.name, ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))] = s.value

    def __call__(self, name: str, **labels: str) -> float:
        """Return one sample's value (KeyError when the page does not show it)."""
        return self.samples[name, ",".join(f"{k}={v}" for k, v in sorted(labels.items()))]

    def nonzero(self, name: str) -> dict[str, float]:
        """Return the samples of one name that are not 0, by their labels."""
        return {labels: v for (n, labels), v in self.samples.items() if n == name and v}

    def names(self) -> set[str]:
        """Return the names of every sample shown."""
        return {n for n, _ in self.samples}
