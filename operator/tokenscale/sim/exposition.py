"""Prometheus text exposition of a list of metric families, and the families' builders.

Called by `sim.engine_metrics`, which names the families each engine exports; this module only turns
a histogram, counter or gauge value into prometheus_client's families and renders them as one scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import cast

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from tokenscale.sim.histogram import HistogramSnapshot

# prometheus_client's own rendering of a float label value (le="1.0", "2.5", "+Inf"); it is untyped.
_go_float = cast(Callable[[float], str], floatToGoString)


def exposition(families: list[Metric]) -> bytes:
    """The Prometheus text exposition of `families`, as one scrape would read them."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


class _Families(Collector):
    """A collector that yields a fixed list of metric families (one scrape's worth)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


def histogram(name: str, doc: str, h: HistogramSnapshot, labels: Mapping[str, str]) -> HistogramMetricFamily:
    """One histogram family of one series: the snapshot's cumulative buckets (le as Prometheus writes it) and sum."""
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    buckets = [(_go_float(b), float(c)) for b, c in zip(h.bounds, h.bucket_counts[:-1], strict=True)]
    buckets.append(("+Inf", float(h.bucket_counts[-1])))
    family.add_metric(list(labels.values()), buckets, h.sum)
    return family


def counter(name: str, doc: str, value: float, labels: Mapping[str, str]) -> CounterMetricFamily:
    """One counter family of one series with `value`."""
    family = CounterMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def gauge(name: str, doc: str, value: float, labels: Mapping[str, str]) -> GaugeMetricFamily:
    """One gauge family of one series with `value`."""
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family
