"""PromQL building: matchers are escaped so no label value can change a query's meaning."""

from __future__ import annotations

import pytest

from tokenscale.metrics import promql


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        pytest.param("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B", id="plain"),
        pytest.param('x"} or vector(1) #', 'x\\"} or vector(1) #', id="quote-closing-the-matcher"),
        pytest.param("a\\b", "a\\\\b", id="backslash"),
        pytest.param('a\\"', 'a\\\\\\"', id="backslash-then-quote"),
        pytest.param("line\nbreak", "line\\nbreak", id="newline"),
    ],
)
def test_label_values_are_escaped(value: str, escaped: str) -> None:
    assert promql.escape_label_value(value) == escaped
    assert promql.selector("m", {"model_name": value}) == f'm{{model_name="{escaped}"}}'


def test_selector_sorts_matchers_and_keeps_colons_in_metric_names() -> None:
    got = promql.selector("vllm:num_requests_running", {"namespace": "llm", "job": "decode"})
    assert got == 'vllm:num_requests_running{job="decode",namespace="llm"}'


@pytest.mark.parametrize(
    ("metric", "labels", "message"),
    [
        pytest.param("vllm:x", {"bad-name": "v"}, "'bad-name' is not a valid label name", id="dash-in-label"),
        pytest.param("vllm:x", {"__name__": "v"}, "'__name__' is not a valid label name", id="reserved-label"),
        pytest.param("x{y", {}, "'x{y' is not a valid Prometheus metric name", id="brace-in-metric"),
    ],
)
def test_invalid_names_are_refused(metric: str, labels: dict[str, str], message: str) -> None:
    with pytest.raises(promql.QueryBuildError, match=message):
        promql.selector(metric, labels)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [pytest.param(120, "120000ms", id="2m"), pytest.param(0.5, "500ms", id="half-second")],
)
def test_durations_in_milliseconds(seconds: float, text: str) -> None:
    assert promql.duration(seconds) == text


def test_histogram_quantile_shape() -> None:
    got = promql.histogram_quantile(0.9, "vllm:time_to_first_token_seconds", {"model_name": "m"}, 60)
    assert got == (
        'histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{model_name="m"}[60000ms])))'
    )
    with pytest.raises(promql.QueryBuildError):
        promql.histogram_quantile(1.0, "h", {}, 60)
