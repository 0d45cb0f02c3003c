"""PromQL text for the signals the planner needs: label matchers, rates, histogram quantiles.

Pure string building, no I/O; called by `metrics.observe`. Every label value is escaped here, so a
model name such as `x"} or vector(1) #` stays a label value and cannot change the query.
PromQL string literals follow Go's escaping (https://prometheus.io/docs/prometheus/latest/querying/basics/#string-literals):
backslash, double quote and newline need escaping inside double quotes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class QueryBuildError(ValueError):
    """A label or metric name that PromQL cannot express (the spec has to change)."""


def escape_label_value(value: str) -> str:
    """The body of a double-quoted PromQL string literal holding `value`."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def selector(metric: str, labels: Mapping[str, str]) -> str:
    """`metric{a="x",b="y"}` with exact-match matchers, names checked and values escaped, sorted by name."""
    if not _METRIC_NAME.match(metric):
        raise QueryBuildError(f"{metric!r} is not a valid Prometheus metric name")
    parts = []
    for name in sorted(labels):
        if not _LABEL_NAME.match(name) or name.startswith("__"):
            raise QueryBuildError(f"{name!r} is not a valid label name for a matcher (letters, digits and _)")
        parts.append(f'{name}="{escape_label_value(labels[name])}"')
    return f"{metric}{{{','.join(parts)}}}"


def duration(seconds: float) -> str:
    """A PromQL duration in whole milliseconds, e.g. 120 → `120000ms` (exact for any window)."""
    ms = round(seconds * 1000.0)
    if ms <= 0:
        raise QueryBuildError(f"a PromQL range must be positive, got {seconds} s")
    return f"{ms}ms"


def increase_sum(counter: str, labels: Mapping[str, str], window_s: float) -> str:
    """Total increase of a counter over the window, summed over series (counter resets compensated)."""
    return f"sum(increase({selector(counter, labels)}[{duration(window_s)}]))"


def resets_sum(counter: str, labels: Mapping[str, str], window_s: float) -> str:
    """How many times the counter's series reset (an engine restart) within the window."""
    return f"sum(resets({selector(counter, labels)}[{duration(window_s)}]))"


def gauge_delta_sum(gauges: tuple[str, ...], labels: Mapping[str, str], window_s: float) -> str:
    """Change over the window of the sum of gauges (e.g. requests running + waiting)."""
    w = duration(window_s)
    return " + ".join(f"sum(delta({selector(g, labels)}[{w}]))" for g in gauges)


def gauge_sum(gauge: str, labels: Mapping[str, str]) -> str:
    return f"sum({selector(gauge, labels)})"


def gauge_avg(gauge: str, labels: Mapping[str, str]) -> str:
    return f"avg({selector(gauge, labels)})"


def series_count(metric: str, labels: Mapping[str, str]) -> str:
    """How many series (≈ engine replicas) currently export `metric`."""
    return f"count({selector(metric, labels)})"


def histogram_buckets(histogram: str, labels: Mapping[str, str], window_s: float) -> str:
    """Per-`le` observation counts over the window, summed over series: one sample per bucket bound."""
    return f"sum by (le) (increase({selector(histogram + '_bucket', labels)}[{duration(window_s)}]))"


def histogram_sum(histogram: str, labels: Mapping[str, str], window_s: float) -> str:
    """Total of the observed values over the window (the histogram's `_sum`)."""
    return increase_sum(histogram + "_sum", labels, window_s)


def histogram_quantile(q: float, histogram: str, labels: Mapping[str, str], window_s: float) -> str:
    """`histogram_quantile(q, sum by (le)(rate(h_bucket[w])))`: linear interpolation inside a bucket."""
    if not 0.0 < q < 1.0:
        raise QueryBuildError(f"quantile must be in (0, 1), got {q}")
    inner = f"sum by (le) (rate({selector(histogram + '_bucket', labels)}[{duration(window_s)}]))"
    return f"histogram_quantile({q!r}, {inner})"


def count_dispersion(counter: str, labels: Mapping[str, str], window_s: float, bin_s: float) -> str:
    """Index of dispersion (variance / mean) of the counter's increase in bins of `bin_s` over the window.

    For a renewal process it tends to the inter-arrival c_a² as bins grow (Cox & Lewis, 1966, §4.5).
    """
    b = duration(bin_s)
    per_bin = f"sum(increase({selector(counter, labels)}[{b}]))"
    w = duration(window_s)
    return f"stdvar_over_time(({per_bin})[{w}:{b}]) / avg_over_time(({per_bin})[{w}:{b}])"


def last_seen_count(metric: str, labels: Mapping[str, str], lookback_s: float) -> str:
    """Series of `metric` that had any sample within the lookback: tells "stale" from "missing"."""
    return f"count(last_over_time({selector(metric, labels)}[{duration(lookback_s)}]))"
