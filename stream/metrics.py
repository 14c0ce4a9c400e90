"""A tiny Prometheus text-format registry (counters, gauges, histograms) for the worker."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

__all__ = ["Metrics", "parse_prometheus", "SIZE_BUCKETS"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Metrics:
    """Counters and gauges keyed by (name, labels); histograms with fixed buckets."""

    def __init__(self, prefix: str = "lepton") -> None:
        self.prefix = prefix
        self.counters: dict[tuple[str, tuple], float] = defaultdict(float)
        self.gauges: dict[tuple[str, tuple], float] = {}
        self.hists: dict[str, list] = {}
        self.buckets: dict[str, tuple] = {}
        self.help: dict[str, str] = {}

    def inc(self, name: str, value: float = 1.0, help: str = "", **labels: str) -> None:  # noqa: A002
        self.counters[(name, tuple(sorted(labels.items())))] += value
        self.help.setdefault(name, help)

    def set(self, name: str, value: float, help: str = "", **labels: str) -> None:  # noqa: A002
        self.gauges[(name, tuple(sorted(labels.items())))] = value
        self.help.setdefault(name, help)

    def observe(self, name: str, value: float, help: str = "", buckets: tuple = _LATENCY_BUCKETS) -> None:  # noqa: A002
        """Add to histogram ``name`` (its buckets are fixed by the first observation)."""
        self.observe_many(name, np.array([value], np.float64), help, buckets)

    def observe_many(self, name: str, values: "np.ndarray", help: str = "",  # noqa: A002
                     buckets: tuple = _LATENCY_BUCKETS) -> None:
        """:meth:`observe` for each of ``values`` at once (per-event latencies: one NumPy pass)."""
        values = np.asarray(values, np.float64)
        bounds = self.buckets.setdefault(name, buckets)
        h = self.hists.setdefault(name, [[0] * (len(bounds) + 1), 0.0, 0])
        counts = np.bincount(np.searchsorted(np.asarray(bounds, np.float64), values, side="left"),
                             minlength=len(bounds) + 1)
        h[0] = [a + int(b) for a, b in zip(h[0], counts)]
        h[1] += float(values.sum())
        h[2] += len(values)
        self.help.setdefault(name, help)

    def counter(self, name: str, **labels: str) -> float:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self) -> str:
        """Prometheus exposition format 0.0.4."""
        lines: list[str] = []
        p = self.prefix
        for kind, store in (("counter", self.counters), ("gauge", self.gauges)):
            names = sorted({k[0] for k in store})
            for name in names:
                lines.append(f"# HELP {p}_{name} {self.help.get(name, '')}".rstrip())
                lines.append(f"# TYPE {p}_{name} {kind}")
                for (n, labels), v in sorted(store.items()):
                    if n == name:
                        lines.append(f"{p}_{name}{_labels(labels)} {v:g}")
        for name, (buckets, total, count) in sorted(self.hists.items()):
            lines.append(f"# HELP {p}_{name} {self.help.get(name, '')}".rstrip())
            lines.append(f"# TYPE {p}_{name} histogram")
            acc = 0
            for le, c in zip((*self.buckets[name], "+Inf"), buckets):
                acc += c
                lines.append(f'{p}_{name}_bucket{{le="{le}"}} {acc}')
            lines.append(f"{p}_{name}_sum {total:g}")
            lines.append(f"{p}_{name}_count {count}")
        return "\n".join(lines) + "\n"


def parse_prometheus(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` from exposition text (for the demo and tests)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def _labels(labels: tuple) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"
