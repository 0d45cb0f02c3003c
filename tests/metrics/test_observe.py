"""Observations from a real Prometheus scraping a scripted vLLM endpoint, and what bad data becomes.

The endpoint (`ScriptedVllm`) exports vLLM's series for a few models, with values that are exact
functions of time, so every expected number is computed by hand: requests finish at `rate_per_s`,
every prompt has 800 tokens and every output 200, every TTFT falls in vLLM's (0.1, 0.25] bucket and
every inter-token latency in (0.025, 0.05]. `histogram_quantile` interpolates linearly inside the
bucket, so p90 TTFT reads 0.1 + 0.9·0.15 = 0.235 s and p90 ITL 0.025 + 0.9·0.025 = 0.0475 s.
The scenario then restarts the engine (counter reset), idles it (0/0), removes its series (stale)
and stops Prometheus (unreachable); each step must give its data-quality note and a held plan.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from harness.prometheus import Prometheus, PrometheusFactory
from harness.textserver import TextServer
from harness.wait import wait_until
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from tokenscale import api, manifests
from tokenscale.metrics import observe
from tokenscale.metrics.prometheus import PrometheusClient
from tokenscale.planner import plan as plan_mod
from tokenscale.planner import profiles
from tokenscale.planner.observation import DataNote, Observation, ReplicaCounts

pytestmark = pytest.mark.prometheus

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
EVIL_MODEL = 'x"} or vector(1) #'
WINDOW_S = 10.0
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKEN_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)


class _Engine:
    """One engine's counters as exact functions of time: `rate_per_s` requests finish per second."""

    def __init__(self, rate_per_s: float) -> None:
        self.rate_per_s = rate_per_s
        self.started = time.monotonic()
        self.done_before = 0.0  # requests finished before the last rate change

    def finished(self, now: float) -> float:
        return self.done_before + self.rate_per_s * (now - self.started)

    def set_rate(self, rate_per_s: float) -> None:
        now = time.monotonic()
        self.done_before, self.started, self.rate_per_s = self.finished(now), now, rate_per_s

    def restart(self) -> None:
        self.done_before, self.started = 0.0, time.monotonic()


class ScriptedVllm(Collector):
    """vLLM's metrics for a set of models, as `_Engine`s; a model can be removed (its series vanish)."""

    def __init__(self, engines: dict[str, _Engine]) -> None:
        self.engines = engines
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Any]:
        now = time.monotonic()
        with self.lock:
            engines = dict(self.engines)
        families = {
            "success": CounterMetricFamily("vllm:request_success", "", labels=["model_name", "finished_reason"]),
            "running": GaugeMetricFamily("vllm:num_requests_running", "", labels=["model_name"]),
            "waiting": GaugeMetricFamily("vllm:num_requests_waiting", "", labels=["model_name"]),
            "kv": GaugeMetricFamily("vllm:kv_cache_usage_perc", "", labels=["model_name"]),
            "ttft": HistogramMetricFamily("vllm:time_to_first_token_seconds", "", labels=["model_name"]),
            "itl": HistogramMetricFamily("vllm:inter_token_latency_seconds", "", labels=["model_name"]),
            "tpot": HistogramMetricFamily("vllm:request_time_per_output_token_seconds", "", labels=["model_name"]),
            "prompt": HistogramMetricFamily("vllm:request_prompt_tokens", "", labels=["model_name"]),
            "gen": HistogramMetricFamily("vllm:request_generation_tokens", "", labels=["model_name"]),
        }
        for model, engine in engines.items():
            n = engine.finished(now)
            families["success"].add_metric([model, "stop"], n)
            families["running"].add_metric([model], 10.0)
            families["waiting"].add_metric([model], 2.0)
            families["kv"].add_metric([model], 0.5)
            for key, bounds, upper, value in (
                ("ttft", TTFT_BUCKETS, 0.25, 0.2),
                ("itl", ITL_BUCKETS, 0.05, 0.04),
                ("tpot", ITL_BUCKETS, 0.075, 0.06),  # per request: above the per-token latency
                ("prompt", TOKEN_BUCKETS, 1000.0, 800.0),
                ("gen", TOKEN_BUCKETS, 200.0, 200.0),
            ):
                buckets = [(repr(b), n if b >= upper else 0.0) for b in bounds] + [("+Inf", n)]
                families[key].add_metric([model], buckets, sum_value=n * value)
        yield from families.values()


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedVllm, TextServer]]:
    collector = ScriptedVllm({MODEL: _Engine(5.0), EVIL_MODEL: _Engine(2.0)})
    registry = CollectorRegistry()
    registry.register(collector)
    with TextServer(lambda path: (200, "text/plain; version=0.0.4", generate_latest(registry))) as server:
        yield collector, server


def _spec(model: str, url: str, timeout: str = "5s") -> api.InferencePoolSpec:
    return api.InferencePoolSpec.model_validate(
        {
            "model": model,
            "mode": "Aggregated",
            "objectives": {"ttft": {"quantile": 0.9, "target": "500ms"}, "tpot": {"quantile": 0.9, "target": "40ms"}},
            "metrics": {"prometheus": {"url": url, "timeout": timeout}, "window": f"{WINDOW_S:g}s"},
            "pools": {"aggregated": {"scaleTargetRef": {"name": "llama-8b"}, "minReplicas": 1, "maxReplicas": 12}},
        }
    )


def _observe(spec: api.InferencePoolSpec, replicas: int = 3) -> observe.ObservationResult:
    client = PrometheusClient(spec.metrics.prometheus.url, timeout_s=spec.metrics.prometheus.timeout.seconds)
    try:
        counts = {"aggregated": ReplicaCounts(replicas, replicas)}
        return asyncio.run(observe.observe(spec, client, time.time(), counts))  # type: ignore[arg-type]
    finally:
        client.close()


def _kinds(obs: Observation) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for note in obs.notes:
        out.setdefault(note.signal, set()).add(note.kind)
    return out


def _held_plan(spec: api.InferencePoolSpec, obs: Observation) -> plan_mod.Decision:
    decision = plan_mod.plan(spec, obs, plan_mod.PlannerState(), obs.time_s, profiles.resolve_all(spec))
    assert decision.held
    assert decision.pools["aggregated"].desired_replicas == 3
    return decision


def _wait_for_full_window(prom: Prometheus, model: str) -> None:
    """Until Prometheus has more than one window of samples of `model`'s finished-requests counter."""
    sel = f'vllm:request_success_total{{model_name="{model}"}}'
    prom.wait_for_series(sel)
    wait_until(
        lambda: prom.query(f"count_over_time({sel}[{WINDOW_S + 2:g}s]) >= {WINDOW_S + 1:g}") or None,
        what="a full window of samples",
        timeout_s=60,
        interval_s=0.5,
    )


def test_observation_lifecycle_against_real_prometheus(
    scripted: tuple[ScriptedVllm, TextServer], prometheus_factory: PrometheusFactory
) -> None:
    collector, server = scripted
    prom = prometheus_factory([server.address])
    _wait_for_full_window(prom, MODEL)
    spec = _spec(MODEL, prom.url)

    # 1. Healthy: every signal read, equal to the script's values.
    result = _observe(spec)
    obs = result.observation
    assert obs.request_rate_per_s == pytest.approx(5.0, rel=0.05)
    assert obs.isl_mean_tokens == pytest.approx(800.0, rel=1e-6)
    assert obs.osl_mean_tokens == pytest.approx(200.0, rel=1e-6)
    assert obs.ttft_quantile_s == pytest.approx(0.235, rel=1e-3)
    assert obs.tpot_quantile_s == pytest.approx(0.0725, rel=1e-3)
    assert obs.itl_quantile_s == pytest.approx(0.0475, rel=1e-3)
    assert obs.itl_mean_s == pytest.approx(0.04, rel=1e-3)
    assert obs.running_requests == {"aggregated": 10.0}
    assert obs.waiting_requests == {"aggregated": 2.0}
    assert obs.kv_usage_fraction == 0.5
    assert result.metrics_replicas == {"aggregated": 1}
    assert obs.arrival_cv2 is not None and obs.arrival_cv2 < 0.5  # a perfectly regular script: no burstiness
    # The 40 ms TPOT target sits in ITL bucket (0.025, 0.05]: 25 ms wide, > half of 40 ms → coarse.
    # The 500 ms TTFT target is a bucket bound with (0.25, 0.5] below it: 250 ms, not > 250 ms → fine.
    assert _kinds(obs) == {"tpot_quantile": {"coarse-buckets"}, "itl_quantile": {"coarse-buckets"}}
    assert all("between buckets 0.025s and 0.05s" in n.message for n in obs.notes)
    decision = plan_mod.plan(spec, obs, plan_mod.PlannerState(), obs.time_s, profiles.resolve_all(spec))
    assert not decision.held

    # 2. A model name that tries to break out of its matcher selects only its own series.
    evil = _observe(_spec(EVIL_MODEL, prom.url)).observation
    assert evil.request_rate_per_s == pytest.approx(2.0, rel=0.05)
    absent = _observe(_spec("no-such-model", prom.url)).observation
    assert absent.request_rate_per_s is None
    assert _kinds(absent)["request_rate"] == {"missing"}
    assert "no series vllm:request_success_total" in next(n.message for n in absent.notes)
    _held_plan(spec, absent)

    # 3. The engine restarts: its counters drop to zero. increase() compensates; the reset is noted.
    collector.engines[MODEL].restart()
    wait_until(
        lambda: prom.query(f'resets(vllm:request_success_total{{model_name="{MODEL}"}}[{WINDOW_S:g}s]) > 0') or None,
        what="the counter reset scraped",
        timeout_s=20,
        interval_s=0.5,
    )
    obs = _observe(spec).observation
    assert "counter-reset" in _kinds(obs)["request_rate"]
    assert obs.request_rate_per_s == pytest.approx(5.0, rel=0.15)

    # 4. Idle: nothing finishes. The rate is a true 0; the lengths are 0/0 — missing, not 0 — so the plan holds.
    collector.engines[MODEL].set_rate(0.0)
    time.sleep(WINDOW_S + 2.0)
    obs = _observe(spec).observation
    assert obs.request_rate_per_s == 0.0
    assert obs.isl_mean_tokens is None and obs.osl_mean_tokens is None
    assert _kinds(obs)["isl_mean"] == {"nan"} and _kinds(obs)["osl_mean"] == {"nan"}
    assert obs.ttft_quantile_s is None
    _held_plan(spec, obs)

    # 5. The engine disappears (pod deleted): its series go stale — held, and said so, not read as zero load.
    with collector.lock:
        collector.engines = {EVIL_MODEL: collector.engines[EVIL_MODEL]}
    time.sleep(WINDOW_S + 2.0)
    obs = _observe(spec).observation
    assert obs.request_rate_per_s is None
    assert _kinds(obs)["request_rate"] == {"stale"}
    decision = _held_plan(spec, obs)
    assert any(c.type == "MetricsAvailable" and c.status == "False" for c in decision.conditions)

    # 6. Prometheus is down: every load signal says unreachable; replicas are held.
    prom.stop()
    obs = _observe(spec).observation
    assert {k: v for k, v in _kinds(obs).items() if k in ("request_rate", "isl_mean", "osl_mean")} == {
        "request_rate": {"unreachable"},
        "isl_mean": {"unreachable"},
        "osl_mean": {"unreachable"},
    }
    _held_plan(spec, obs)


def _prometheus_answer(result: list[dict[str, Any]]) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


@pytest.mark.parametrize(
    ("status", "content_type", "body", "delay_s", "kind"),
    [
        pytest.param(200, "text/html", b"<html>proxy login</html>", 0.0, "bad-response", id="html-instead-of-json"),
        pytest.param(200, "application/json", b'{"status": "success"}', 0.0, "bad-response", id="json-without-data"),
        pytest.param(503, "text/plain", b"overloaded", 0.0, "http-status", id="http-503"),
        pytest.param(200, "application/json", _prometheus_answer([]), 3.0, "timeout", id="slower-than-the-timeout"),
    ],
)
def test_a_misbehaving_prometheus_gives_a_reason_and_a_held_plan(
    status: int, content_type: str, body: bytes, delay_s: float, kind: str
) -> None:
    with TextServer(lambda path: (status, content_type, body), delay_s=delay_s) as server:
        spec = _spec(MODEL, server.url, timeout="1s")
        obs = _observe(spec).observation
    assert obs.request_rate_per_s is None
    assert kind in _kinds(obs)["request_rate"]
    _held_plan(spec, obs)


def _garbage_answer(path: str, value: str, copies: int, only_inf_bucket: bool) -> tuple[int, str, bytes]:
    """Answer every tagged sub-query of a batched observation with the same garbage; others with nothing."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("query", [""])[0]
    result = []
    for name in re.findall(r'"tokenscale_signal", "([^"]+)"', query):
        les = ["+Inf"] if only_inf_bucket else [*(f"{b:g}" for b in TOKEN_BUCKETS), "+Inf"]
        for copy_index in range(copies):
            labels = {"tokenscale_signal": name, "instance": f"i{copy_index}"}
            if "_buckets" in name:
                result += [{"metric": {**labels, "le": le}, "value": [0, value]} for le in les]
            else:
                result.append({"metric": labels, "value": [0, value]})
    return 200, "application/json", _prometheus_answer(result)


@pytest.mark.parametrize(
    ("value", "copies", "only_inf_bucket", "held"),
    [
        pytest.param("10", 1, True, False, id="histograms-with-only-the-inf-bucket"),
        pytest.param("10", 2, False, True, id="two-series-for-every-signal"),
        pytest.param("+Inf", 1, False, True, id="infinite-values"),
        pytest.param("-3", 1, False, True, id="negative-values"),
        pytest.param("1e300", 1, False, True, id="huge-values"),
    ],
)
def test_garbage_from_prometheus_is_a_data_quality_note_never_an_exception(
    value: str, copies: int, only_inf_bucket: bool, held: bool
) -> None:
    with TextServer(lambda path: _garbage_answer(path, value, copies, only_inf_bucket)) as server:
        spec = _spec(MODEL, server.url, timeout="2s")
        obs = _observe(spec).observation
    if held:
        assert obs.request_rate_per_s is None
        assert obs.waiting_requests == {}  # no queue is read from garbage, so none is drained
        # A count no aggregated query can give is refused where it is read; one no pool could show,
        # as the signal it makes (2e298 req/s from a 1e300 increase) and as the queue.
        garbage = ("request_rate", "waiting_aggregated") if value == "1e300" else ("finished",)
        assert all("implausible" in _kinds(obs)[name] for name in garbage)
        # The load signal says why: garbage, not "no series" or "no samples" (issue 13).
        assert "implausible" in _kinds(obs)["request_rate"]
        _held_plan(spec, obs)
    else:  # the mean is known (sum / count), the spread is not; the planner plans on the rest
        assert obs.isl_mean_tokens == pytest.approx(1.0) and obs.isl_cv2 is None
        plan_mod.plan(spec, obs, plan_mod.PlannerState(), obs.time_s, profiles.resolve_all(spec))
    # What `plan --prometheus -o json` prints round-trips: no validation error on any garbage.
    assert manifests.RecordedObservation.from_observation(obs).to_observation().request_rate_per_s == (
        obs.request_rate_per_s
    )


def test_a_timeout_on_the_ttft_signal_blocks_a_scale_down() -> None:
    # A scale-down needs every signal: a TTFT query that timed out is as unavailable as a stale one.
    obs = Observation(
        time_s=0.0,
        request_rate_per_s=0.5,
        isl_mean_tokens=800.0,
        osl_mean_tokens=200.0,
        replicas={"aggregated": ReplicaCounts(6, 6)},
        notes=(DataNote("ttft_quantile", "timeout", "no answer within 5s"),),
    )
    spec = _spec(MODEL, "http://127.0.0.1:9")
    decision = plan_mod.plan(spec, obs, plan_mod.PlannerState(), 0.0, profiles.resolve_all(spec))
    assert decision.pools["aggregated"].desired_replicas == 6
    metrics = next(c for c in decision.conditions if c.type == "MetricsAvailable")
    assert metrics.reason == "MetricsPartial"


def test_a_slow_prometheus_does_not_block_the_event_loop() -> None:
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.05)

    async def scenario(spec: api.InferencePoolSpec) -> observe.ObservationResult:
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        client = PrometheusClient(spec.metrics.prometheus.url, timeout_s=1.0)
        try:
            return await observe.observe(spec, client, time.time(), {"aggregated": ReplicaCounts(3, 3)})
        finally:
            client.close()
            stop.set()
            await task

    with TextServer(lambda path: (200, "application/json", _prometheus_answer([])), delay_s=1.5) as server:
        result = asyncio.run(scenario(_spec(MODEL, server.url, timeout="1s")))
    assert "timeout" in _kinds(result.observation)["request_rate"]
    # The observation took ≥ 1 s (the timeout); a loop blocked by a synchronous call would tick once or twice.
    assert ticks >= 10


def test_queries_carry_the_pool_labels_and_the_spec_labels() -> None:
    doc = copy.deepcopy(
        {
            "model": MODEL,
            "mode": "Disaggregated",
            "objectives": {"ttft": {"quantile": 0.9, "target": "1s"}, "tpot": {"quantile": 0.9, "target": "50ms"}},
            "metrics": {"prometheus": {"url": "http://p:9090"}, "labels": {"namespace": "llm"}},
            "pools": {
                "prefill": {"scaleTargetRef": {"name": "p"}, "metricsLabels": {"job": "p"}, "maxReplicas": 4},
                "decode": {"scaleTargetRef": {"name": "d"}, "metricsLabels": {"job": "d"}, "maxReplicas": 4},
            },
        }
    )
    spec = api.InferencePoolSpec.model_validate(doc)
    plan = observe._Plan(spec, observe.PRESETS["vllm"])
    plan.build()
    q = plan.queries
    decode = f'{{job="d",model_name="{MODEL}",namespace="llm"}}'
    prefill = f'{{job="p",model_name="{MODEL}",namespace="llm"}}'
    both = f'{{model_name="{MODEL}",namespace="llm"}}'
    assert q["finished"] == f"sum(increase(vllm:request_success_total{decode}[120000ms]))"
    assert decode in q["ttft_quantile_0"] and decode in q["isl_buckets"]
    assert prefill in q["prefill_buckets"] and prefill in q["running_prefill"]
    assert q["waiting_prefill"] == f"sum(vllm:num_requests_waiting{prefill})"
    assert q["waiting_decode"] == f"sum(vllm:num_requests_waiting{decode})"
    assert q["in_system_delta"] == (
        f"sum(delta(vllm:num_requests_running{both}[120000ms])) + sum(delta(vllm:num_requests_waiting{both}[120000ms]))"
    )


# --- fuzzing: any JSON Prometheus might answer (issue 13) -----------------------------------------

JSON_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(allow_nan=False),
    st.sampled_from(["1", "NaN", "+Inf", "-Inf", "-3", "1e400", "x", "", "0x10"]),
)  # fmt: skip
JSON_VALUE = st.recursive(
    JSON_SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)  # fmt: skip
SAMPLE = st.fixed_dictionaries(
    {"metric": st.one_of(st.dictionaries(st.sampled_from(["le", "tokenscale_signal", "job"]), JSON_SCALAR,
                                         max_size=3), JSON_VALUE),
     "value": st.one_of(st.tuples(st.floats(0, 2e9), JSON_SCALAR).map(list), JSON_VALUE)}
)  # fmt: skip
ANSWER = st.one_of(
    st.lists(SAMPLE, max_size=4).map(lambda r: {"status": "success", "data": {"resultType": "vector", "result": r}}),
    st.fixed_dictionaries({"status": JSON_SCALAR, "data": JSON_VALUE}),
    JSON_VALUE,
)


@settings(max_examples=30, deadline=None)
@given(answer=ANSWER, status=st.sampled_from([200, 200, 200, 400, 500]))
def test_any_json_from_prometheus_is_notes_and_a_held_or_planned_decision(answer: Any, status: int) -> None:
    body = json.dumps(answer, allow_nan=True).encode()
    with TextServer(lambda path: (status, "application/json", body)) as server:
        spec = _spec(MODEL, server.url, timeout="2s")
        obs = _observe(spec).observation
    for value in (obs.request_rate_per_s, obs.isl_mean_tokens, obs.osl_mean_tokens, obs.ttft_quantile_s):
        assert value is None or (math.isfinite(value) and value >= 0), obs
    decision = plan_mod.plan(spec, obs, plan_mod.PlannerState(), obs.time_s, profiles.resolve_all(spec))
    if obs.request_rate_per_s is None:
        assert decision.held and decision.pools["aggregated"].desired_replicas == 3
    manifests.RecordedObservation.from_observation(obs).to_observation()  # what -o json prints round-trips
