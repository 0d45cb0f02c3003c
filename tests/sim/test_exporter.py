"""The engine-metrics exporter (sim/engine_metrics.py, sim/exporter.py, sim/truth.py): expositions per engine and
role, the live fleet, the HTTP server, the ground truth.

Also `Fleet.append_arrivals` (sim/fleet.py), which the live fleet is built on.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from harness.replicas import SMALL_REPLICA
from harness.wait import wait_until
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tokenscale.api import Mode, Role
from tokenscale.sim.engine_metrics import ExportEngine, ExportRole, render
from tokenscale.sim.exporter import Control, LiveFleet, MetricsServer, parse_control
from tokenscale.sim.fleet import Fleet, FleetConfig, PoolConfig
from tokenscale.sim.histogram import (
    ITL_BUCKETS_S,
    REQUEST_LATENCY_BUCKETS_S,
    TTFT_BUCKETS_S,
    HistogramSnapshot,
    token_buckets,
)
from tokenscale.sim.snapshot import FleetSnapshot, RequestRecords
from tokenscale.sim.truth import ground_truth
from tokenscale.sim.workload import LengthDistribution, make_workload, synthetic_workload

PERF = SMALL_REPLICA
ISL = LengthDistribution(800.0, 1.0, 16, 8192)
OSL = LengthDistribution(120.0, 1.0, 1, 2048)
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
EMPTY = make_workload("empty", [], [], [])


def config(mode: Mode, cold_start_s: float = 0.0, replicas: int = 2) -> FleetConfig:
    if mode == "Disaggregated":
        pools = {"prefill": PoolConfig(PERF, replicas), "decode": PoolConfig(PERF, replicas, 2)}
    else:
        pools = {"aggregated": PoolConfig(PERF, replicas)}
    return FleetConfig(mode, pools, cold_start_s=cold_start_s)  # type: ignore[arg-type]


def busy_snapshot(mode: Mode) -> FleetSnapshot:
    """A fleet mid-run at 100 s: 20 req/s overloads its one prefill (or aggregated) replica, so requests queue."""
    w = synthetic_workload(np.random.default_rng(7), 120.0, 20.0, shape="constant", isl=ISL, osl=OSL)
    fleet = Fleet(w, config(mode, replicas=1), np.random.default_rng(0))
    return fleet.snapshot(100.0)


SNAPSHOTS = {mode: busy_snapshot(mode) for mode in ("Disaggregated", "Aggregated")}


def families(text: bytes) -> dict[str, tuple[str, list[Sample]]]:
    """{family name: (type, samples)} as Prometheus's text parser reads them."""
    return {f.name: (f.type, list(f.samples)) for f in text_string_to_metric_families(text.decode())}


# ---------------------------------------------------------------------------------------------
# render: names, types, labels, buckets and values per engine and role
# ---------------------------------------------------------------------------------------------

Hist = Callable[[FleetSnapshot], HistogramSnapshot]
Value = Callable[[FleetSnapshot, Role], float]


@dataclass(frozen=True)
class Expected:
    histograms: dict[str, tuple[Hist, tuple[float, ...]]]  # name → (the snapshot's histogram, its vLLM bounds)
    counters: dict[str, Value]  # sample name (…_total) → value
    gauges: dict[str, Value]
    labels: dict[str, str]  # labels on every sample (`engine_type` etc.)


TOKENS = token_buckets(32768)


def _ttft(s: FleetSnapshot) -> HistogramSnapshot:
    return s.ttft_s


def _itl(s: FleetSnapshot) -> HistogramSnapshot:
    return s.itl_s


def _tpot(s: FleetSnapshot) -> HistogramSnapshot:
    return s.tpot_s


def _e2e(s: FleetSnapshot) -> HistogramSnapshot:
    return s.e2e_s


def _queue(s: FleetSnapshot) -> HistogramSnapshot:
    return s.queue_time_s


def _prefill(s: FleetSnapshot) -> HistogramSnapshot:
    return s.prefill_time_s


def _isl(s: FleetSnapshot) -> HistogramSnapshot:
    return s.prompt_tokens


def _osl(s: FleetSnapshot) -> HistogramSnapshot:
    return s.generation_tokens


def running(s: FleetSnapshot, role: Role) -> float:
    return s.pools[role].running_requests


def waiting(s: FleetSnapshot, role: Role) -> float:
    return s.pools[role].waiting_requests


def kv(s: FleetSnapshot, role: Role) -> float:
    return s.pools[role].kv_usage_fraction


def finished(s: FleetSnapshot, role: Role) -> float:
    return s.finished_total


VLLM_SERVING_HISTOGRAMS: dict[str, tuple[Hist, tuple[float, ...]]] = {
    "vllm:time_to_first_token_seconds": (_ttft, TTFT_BUCKETS_S),
    "vllm:inter_token_latency_seconds": (_itl, ITL_BUCKETS_S),
    "vllm:request_time_per_output_token_seconds": (_tpot, ITL_BUCKETS_S),
    "vllm:e2e_request_latency_seconds": (_e2e, REQUEST_LATENCY_BUCKETS_S),
    "vllm:request_prompt_tokens": (_isl, TOKENS),
    "vllm:request_generation_tokens": (_osl, TOKENS),
}
VLLM_PREFILL_HISTOGRAMS: dict[str, tuple[Hist, tuple[float, ...]]] = {
    "vllm:request_queue_time_seconds": (_queue, REQUEST_LATENCY_BUCKETS_S),
    "vllm:request_prefill_time_seconds": (_prefill, REQUEST_LATENCY_BUCKETS_S),
}
VLLM_GAUGES: dict[str, Value] = {
    "vllm:num_requests_running": running,
    "vllm:num_requests_waiting": waiting,
    "vllm:kv_cache_usage_perc": kv,
}
VLLM_SERVING_COUNTERS: dict[str, Value] = {
    "vllm:request_success_total": finished,  # finished_reason="stop"
    "vllm:prompt_tokens_total": lambda s, r: s.first_token_prompt_tokens_total,
    "vllm:generation_tokens_total": lambda s, r: s.generation_tokens_total,
}
VLLM_LABELS = {"model_name": MODEL, "engine": "0"}

SGLANG_SERVING_HISTOGRAMS: dict[str, tuple[Hist, tuple[float, ...]]] = {
    "sglang:time_to_first_token_seconds": (_ttft, TTFT_BUCKETS_S),
    "sglang:inter_token_latency_seconds": (_itl, ITL_BUCKETS_S),
    "sglang:time_per_output_token_seconds": (_tpot, ITL_BUCKETS_S),
    "sglang:e2e_request_latency_seconds": (_e2e, REQUEST_LATENCY_BUCKETS_S),
}
SGLANG_SERVING_COUNTERS: dict[str, Value] = {
    "sglang:prompt_tokens_total": lambda s, r: s.prompt_tokens.sum,
    "sglang:generation_tokens_total": lambda s, r: s.generation_tokens.sum,
    "sglang:num_requests_total": finished,
}
SGLANG_GAUGES: dict[str, Value] = {
    "sglang:num_running_reqs": running,
    "sglang:num_queue_reqs": waiting,
    "sglang:token_usage": kv,
}

TRTLLM_SERVING_HISTOGRAMS: dict[str, tuple[Hist, tuple[float, ...]]] = {
    "trtllm_time_to_first_token_seconds": (_ttft, TTFT_BUCKETS_S),
    "trtllm_time_per_output_token_seconds": (_tpot, ITL_BUCKETS_S),
    "trtllm_e2e_request_latency_seconds": (_e2e, REQUEST_LATENCY_BUCKETS_S),
}
TRTLLM_QUEUE: dict[str, tuple[Hist, tuple[float, ...]]] = {
    "trtllm_request_queue_time_seconds": (_queue, REQUEST_LATENCY_BUCKETS_S)
}
TRTLLM_LABELS = {"model_name": MODEL, "engine_type": "trtllm"}

DYNAMO = Expected(
    histograms={
        "dynamo_frontend_time_to_first_token_seconds": (_ttft, TTFT_BUCKETS_S),
        "dynamo_frontend_inter_token_latency_seconds": (_itl, ITL_BUCKETS_S),
        "dynamo_frontend_request_duration_seconds": (_e2e, REQUEST_LATENCY_BUCKETS_S),
        "dynamo_frontend_input_sequence_tokens": (_isl, TOKENS),
        "dynamo_frontend_output_sequence_tokens": (_osl, TOKENS),
    },
    counters={
        "dynamo_frontend_requests_total": finished,
        "dynamo_frontend_output_tokens_total": lambda s, r: s.generation_tokens_total,
    },
    gauges={
        "dynamo_frontend_inflight_requests": lambda s, r: s.arrivals_total - s.finished_total,
        "dynamo_frontend_queued_requests": lambda s, r: s.arrivals_total - s.ttft_s.count,
    },
    labels={"model": MODEL},
)

RENDER_CASES = [
    pytest.param(
        "vllm",
        "Aggregated",
        "aggregated",
        Expected(
            {**VLLM_SERVING_HISTOGRAMS, **VLLM_PREFILL_HISTOGRAMS}, VLLM_SERVING_COUNTERS, VLLM_GAUGES, VLLM_LABELS
        ),
        id="vllm-aggregated-everything",
    ),
    pytest.param(
        "vllm",
        "Disaggregated",
        "decode",
        Expected(VLLM_SERVING_HISTOGRAMS, VLLM_SERVING_COUNTERS, VLLM_GAUGES, VLLM_LABELS),
        id="vllm-decode-user-facing-no-prefill-histograms",
    ),
    pytest.param(
        "vllm",
        "Disaggregated",
        "prefill",
        Expected(
            VLLM_PREFILL_HISTOGRAMS,
            {"vllm:prompt_tokens_total": lambda s, r: s.prompt_tokens_total},
            VLLM_GAUGES,
            VLLM_LABELS,
        ),
        id="vllm-prefill-queue-prefill-time-prompt-tokens-gauges",
    ),
    pytest.param(
        "sglang",
        "Aggregated",
        "aggregated",
        Expected(
            SGLANG_SERVING_HISTOGRAMS,
            SGLANG_SERVING_COUNTERS,
            SGLANG_GAUGES,
            {"model_name": MODEL, "engine_type": "unified"},
        ),
        id="sglang-aggregated-unified",
    ),
    pytest.param(
        "sglang",
        "Disaggregated",
        "decode",
        Expected(
            SGLANG_SERVING_HISTOGRAMS,
            SGLANG_SERVING_COUNTERS,
            SGLANG_GAUGES,
            {"model_name": MODEL, "engine_type": "decode"},
        ),
        id="sglang-decode",
    ),
    pytest.param(
        "sglang",
        "Disaggregated",
        "prefill",
        Expected(
            {},
            {"sglang:prompt_tokens_total": lambda s, r: s.prompt_tokens_total},
            SGLANG_GAUGES,
            {"model_name": MODEL, "engine_type": "prefill"},
        ),
        id="sglang-prefill-prompt-tokens-and-gauges",
    ),
    pytest.param(
        "trtllm",
        "Aggregated",
        "aggregated",
        Expected(
            {**TRTLLM_SERVING_HISTOGRAMS, **TRTLLM_QUEUE},
            {"trtllm_request_success_total": finished},
            {},
            TRTLLM_LABELS,
        ),
        id="trtllm-aggregated",
    ),
    pytest.param(
        "trtllm",
        "Disaggregated",
        "decode",
        Expected(TRTLLM_SERVING_HISTOGRAMS, {"trtllm_request_success_total": finished}, {}, TRTLLM_LABELS),
        id="trtllm-decode",
    ),
    pytest.param(
        "trtllm", "Disaggregated", "prefill", Expected(TRTLLM_QUEUE, {}, {}, TRTLLM_LABELS), id="trtllm-prefill-queue"
    ),
    pytest.param("dynamo", "Disaggregated", "frontend", DYNAMO, id="dynamo-frontend-disaggregated"),
    pytest.param("dynamo", "Aggregated", "frontend", DYNAMO, id="dynamo-frontend-aggregated"),
]


@pytest.mark.parametrize(("engine", "mode", "role", "expected"), RENDER_CASES)
def test_render_names_types_labels_buckets_values(
    engine: ExportEngine, mode: Mode, role: ExportRole, expected: Expected
) -> None:
    snap = SNAPSHOTS[mode]
    parsed = families(render(snap, role, engine, MODEL))
    pool_role: Role = "decode" if role == "frontend" else role  # frontend values take no pool

    want = {name: "histogram" for name in expected.histograms}
    want |= {name.removesuffix("_total"): "counter" for name in expected.counters}
    want |= {name: "gauge" for name in expected.gauges}
    assert {name: kind for name, (kind, _) in parsed.items()} == want

    for name, (_, samples) in parsed.items():
        for sample in samples:
            assert expected.labels.items() <= sample.labels.items(), (name, sample)

    for name, (get, bounds) in expected.histograms.items():
        h = get(snap)
        samples = parsed[name][1]
        buckets = [s for s in samples if s.name == f"{name}_bucket"]
        assert [s.labels["le"] for s in buckets][-1] == "+Inf"
        assert [float(s.labels["le"]) for s in buckets[:-1]] == list(bounds), name
        counts = [s.value for s in buckets]
        assert counts == pytest.approx(list(h.bucket_counts)), name
        assert all(a <= b for a, b in zip(counts, counts[1:], strict=False)), f"{name} buckets not cumulative"
        (count,) = [s.value for s in samples if s.name == f"{name}_count"]
        (total,) = [s.value for s in samples if s.name == f"{name}_sum"]
        assert count == counts[-1]
        assert total == pytest.approx(h.sum)

    for name, value in expected.counters.items():
        samples = [s for s in parsed[name.removesuffix("_total")][1] if s.name == name]
        assert samples, f"{name}: no sample named with _total"
        reasons = {s.labels.get("finished_reason", "") for s in samples}
        (stop,) = [s for s in samples if s.labels.get("finished_reason", "stop") == "stop"]
        assert stop.value == pytest.approx(value(snap, pool_role)), name
        assert sum(s.value for s in samples) == stop.value, f"{name}: other finish reasons must be 0 ({reasons})"

    for name, value in expected.gauges.items():
        (sample,) = parsed[name][1]
        assert sample.value == pytest.approx(value(snap, pool_role)), name


def test_the_busy_snapshots_exercise_every_metric() -> None:
    """The render table would pass trivially on an idle fleet: every figure it compares is non-zero."""
    for mode, snap in SNAPSHOTS.items():
        serving: Role = "aggregated" if mode == "Aggregated" else "decode"
        histograms = (snap.ttft_s, snap.itl_s, snap.tpot_s, snap.e2e_s, snap.queue_time_s, snap.prefill_time_s)
        assert all(h.count > 0 for h in histograms), mode
        assert snap.finished_total > 0 and snap.in_system > 0, mode
        assert snap.pools[serving].running_requests > 0 and snap.pools[serving].kv_usage_fraction > 0, mode
        assert sum(p.waiting_requests for p in snap.pools.values()) > 0, mode
        assert snap.arrivals_total > snap.ttft_s.count, mode  # some requests queued before their first token
        assert 0 < snap.first_token_prompt_tokens_total <= snap.prompt_tokens_total + 1e-9, mode


@pytest.mark.parametrize(
    ("engine", "mode", "role", "message"),
    [
        pytest.param("vllm", "Disaggregated", "frontend", "Dynamo's frontend", id="frontend-needs-dynamo"),
        pytest.param("dynamo", "Disaggregated", "decode", "only the frontend", id="dynamo-has-no-pools"),
        pytest.param("vllm", "Aggregated", "prefill", "no 'prefill' pool", id="pool-not-in-fleet"),
        pytest.param("tgi", "Aggregated", "aggregated", "unknown engine", id="unknown-engine"),
    ],
)
def test_render_rejects(engine: ExportEngine, mode: Mode, role: ExportRole, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render(SNAPSHOTS[mode], role, engine, MODEL)


# ---------------------------------------------------------------------------------------------
# Fleet.append_arrivals
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["Disaggregated", "Aggregated"])
def test_appended_arrivals_run_as_if_the_workload_had_them(mode: Mode) -> None:
    """Chunks appended as time goes on give the same run as the whole workload given up front."""
    w = synthetic_workload(np.random.default_rng(3), 90.0, 4.0, shape="constant", isl=ISL, osl=OSL)
    whole = Fleet(w, config(mode), np.random.default_rng(0))
    live = Fleet(EMPTY, config(mode), np.random.default_rng(0))
    for start in range(0, 90, 10):
        chunk = (w.arrival_s >= start) & (w.arrival_s < start + 10)
        live.append_arrivals(w.arrival_s[chunk], w.isl_tokens[chunk], w.osl_tokens[chunk])
        whole.run_until(start + 10.0)
        live.run_until(start + 10.0)
    assert whole.run_to_completion() == live.run_to_completion()
    a, b = whole.records(), live.records()
    for field in RequestRecords.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert live.snapshot(live.now_s).finished_total == w.n_requests


@pytest.mark.parametrize(
    ("arrivals", "isl", "osl", "message"),
    [
        pytest.param([4.0], [10], [10], "≥ 5", id="before-now"),
        pytest.param([6.0, 5.5], [10, 10], [10, 10], "sorted", id="unsorted"),
        pytest.param([6.0], [10, 11], [10], "same length", id="length-mismatch"),
        pytest.param([6.0], [0], [10], "≥ 1", id="empty-prompt"),
        pytest.param([math.inf], [10], [10], "finite", id="infinite"),
    ],
)
def test_append_arrivals_rejects(arrivals: list[float], isl: list[int], osl: list[int], message: str) -> None:
    fleet = Fleet(EMPTY, config("Aggregated"), np.random.default_rng(0))
    fleet.run_until(5.0)
    with pytest.raises(ValueError, match=message):
        fleet.append_arrivals(arrivals, isl, osl)


# ---------------------------------------------------------------------------------------------
# Ground truth from records
# ---------------------------------------------------------------------------------------------


def records(rows: list[tuple[float, int, int, float, float]]) -> RequestRecords:
    """Records from (arrival, ISL, OSL, first token, finish) rows."""
    arr = np.array(rows, dtype=np.float64)
    nan = np.full(len(rows), math.nan)
    return RequestRecords(
        arrival_s=arr[:, 0],
        isl_tokens=arr[:, 1].astype(np.int64),
        osl_tokens=arr[:, 2].astype(np.int64),
        prefill_start_s=nan,
        prefill_end_s=nan,
        decode_start_s=nan,
        first_token_s=arr[:, 3],
        finish_s=arr[:, 4],
    )


TRUTH_ROWS = records(
    [
        (1.0, 100, 11, 2.0, 3.0),  # before the window (10, 20]
        (9.0, 200, 11, 11.0, 12.0),  # arrived before, first token and finish inside: TPOT 0.1
        (12.0, 400, 21, 13.0, 17.0),  # all inside: TTFT 1, TPOT 0.2 over 20 tokens
        (15.0, 600, 1, 18.0, 18.0),  # all inside, one token: no TPOT
        (19.0, 800, 5, 20.5, 22.0),  # arrived inside, first token after
        (20.0, 100, 5, math.nan, math.nan),  # arrives at the window's end (included), not started
    ]
)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        pytest.param("arrivals", 4, id="arrivals-in-window"),
        pytest.param("arrival_rate_per_s", 0.4, id="rate-over-window"),
        pytest.param("first_tokens", 3, id="first-tokens-in-window"),
        pytest.param("finished", 3, id="finished-in-window"),
        pytest.param("isl_mean_tokens", 400.0, id="isl-of-finished"),
        pytest.param("osl_mean_tokens", 11.0, id="osl-of-finished"),
        pytest.param("ttft_mean_s", (2.0 + 1.0 + 3.0) / 3, id="ttft-mean-by-first-token"),
        pytest.param("ttft_p50_s", 2.0, id="ttft-median"),
        pytest.param("itl_mean_s", (1.0 + 4.0) / 30, id="itl-token-weighted-mean"),
        pytest.param("itl_p50_s", 0.2, id="itl-median-token-weighted"),
        pytest.param("tpot_p50_s", 0.15, id="tpot-median-per-request"),
    ],
)
def test_ground_truth(field: str, expected: float) -> None:
    truth = ground_truth(TRUTH_ROWS, 10.0, 20.0)
    assert getattr(truth, field) == pytest.approx(expected)


def test_ground_truth_of_an_empty_window_is_none_not_zero() -> None:
    truth = ground_truth(TRUTH_ROWS, 100.0, 110.0)
    assert truth.arrivals == 0 and truth.arrival_rate_per_s == 0.0
    assert truth.ttft_p90_s is None and truth.itl_mean_s is None and truth.isl_mean_tokens is None
    json.dumps(truth.as_json(), allow_nan=False)


# ---------------------------------------------------------------------------------------------
# LiveFleet
# ---------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_live_fleet_follows_its_clock_and_rate_changes() -> None:
    """Simulated time = wall × speedup; arrivals follow the rate in force, which can change mid-run."""
    clock = FakeClock()
    live = LiveFleet(config("Disaggregated"), 4.0, speedup=60.0, seed=1, isl=ISL, osl=OSL, clock=clock)
    clock.now_s += 3.0  # 180 simulated seconds at 4/s
    first = live.snapshot()
    live.set_rate(12.0)
    clock.now_s += 2.0  # 120 more at 12/s
    second = live.snapshot()
    assert (first.time_s, second.time_s) == (180.0, 300.0)
    assert first.arrivals_total / 180.0 == pytest.approx(4.0, rel=0.15)
    assert (second.arrivals_total - first.arrivals_total) / 120.0 == pytest.approx(12.0, rel=0.1)
    live.stop()
    clock.now_s += 10.0
    assert live.snapshot().time_s == 300.0  # stopped: stands still


def test_live_fleet_is_deterministic_given_seed_and_times() -> None:
    runs = []
    for _ in range(2):
        clock = FakeClock()
        live = LiveFleet(config("Aggregated"), 6.0, speedup=30.0, seed=5, isl=ISL, osl=OSL, clock=clock)
        for _ in range(4):
            clock.now_s += 1.5
            live.snapshot()
        live.set_replicas("aggregated", 3)
        clock.now_s += 2.0
        snap = live.snapshot()
        runs.append((snap.arrivals_total, snap.finished_total, snap.ttft_s.sum, snap.generation_tokens_total))
    assert runs[0] == runs[1]


def test_live_fleet_thread_keeps_the_set_rate() -> None:
    """Real clock at 60×: the finished-requests counter grows at the set rate (per simulated second)."""
    rate = 10.0
    with LiveFleet(config("Disaggregated"), rate, speedup=60.0, seed=2, isl=ISL, osl=OSL) as live:
        early = wait_until(lambda: _at_least(live, 60.0), what="60 simulated seconds", timeout_s=30)
        late = wait_until(lambda: _at_least(live, 300.0), what="300 simulated seconds", timeout_s=60)
        thread = live._thread
    assert thread is not None and not thread.is_alive()
    counters = []
    for snap in (early, late):
        parsed = families(render(snap, "decode", "vllm", MODEL))
        (stop,) = [s for s in parsed["vllm:request_success"][1] if s.labels["finished_reason"] == "stop"]
        counters.append(stop.value)
    measured = (counters[1] - counters[0]) / (late.time_s - early.time_s)
    assert measured == pytest.approx(rate, rel=0.12)


def _at_least(live: LiveFleet, time_s: float) -> FleetSnapshot | None:
    snap = live.snapshot()
    return snap if snap.time_s >= time_s else None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"rate_per_s": -1.0}, "rate_per_s", id="negative-rate"),
        pytest.param({"rate_per_s": 1.0, "speedup": 0.0}, "speedup", id="zero-speedup"),
        pytest.param({"rate_per_s": 1.0, "tick_s": 0.0}, "tick_s", id="zero-tick"),
    ],
)
def test_live_fleet_rejects(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LiveFleet(config("Aggregated"), **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Control parsing and the HTTP server
# ---------------------------------------------------------------------------------------------

ROLES: tuple[Role, ...] = ("prefill", "decode")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b'{"rate_per_s": 3}', Control(3.0, {}), id="rate-only"),
        pytest.param(b'{"replicas": {"decode": 4}}', Control(None, {"decode": 4}), id="replicas-only"),
        pytest.param(
            b'{"rate_per_s": 0.5, "replicas": {"prefill": 0, "decode": 2}}',
            Control(0.5, {"prefill": 0, "decode": 2}),
            id="both",
        ),
    ],
)
def test_parse_control(body: bytes, expected: Control) -> None:
    assert parse_control(body, ROLES) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"{", "not JSON", id="bad-json"),
        pytest.param(b"[1]", "JSON object", id="not-an-object"),
        pytest.param(b'{"rate": 3}', "unknown fields", id="misspelt-field"),
        pytest.param(b'{"rate_per_s": "3"}', "number", id="rate-as-string"),
        pytest.param(b'{"rate_per_s": -2}', "≥ 0", id="negative-rate"),
        pytest.param(b'{"replicas": {"aggregated": 1}}', "no 'aggregated' pool", id="unknown-role"),
        pytest.param(b'{"replicas": {"decode": 1.5}}', "integer", id="fractional-replicas"),
        pytest.param(b'{"replicas": {"decode": true}}', "integer", id="boolean-replicas"),
    ],
)
def test_parse_control_rejects(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_control(body, ROLES)


def request(url: str, body: bytes | None = None) -> tuple[int, str, bytes]:
    """(status, Content-Type, body) of a GET, or of a POST when `body` is given."""
    req = urllib.request.Request(url, data=body, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers["Content-Type"], err.read()


@pytest.fixture
def served() -> Iterator[MetricsServer]:
    live = LiveFleet(config("Disaggregated", cold_start_s=30.0), 5.0, speedup=60.0, seed=4, isl=ISL, osl=OSL)
    with live, MetricsServer(live, model=MODEL, engine="vllm") as server:
        yield server


@pytest.mark.parametrize(
    ("path", "status", "family"),
    [
        pytest.param("/metrics/decode", 200, "vllm:time_to_first_token_seconds", id="decode"),
        pytest.param("/metrics/prefill", 200, "vllm:request_prefill_time_seconds", id="prefill"),
        pytest.param("/metrics/frontend", 200, "dynamo_frontend_requests", id="frontend"),
        pytest.param("/metrics/aggregated", 404, None, id="role-not-in-fleet"),
        pytest.param("/metrics/nope", 404, None, id="unknown-role"),
        pytest.param("/metrics", 404, None, id="no-role"),
        pytest.param("/elsewhere", 404, None, id="unknown-path"),
    ],
)
def test_server_metrics(served: MetricsServer, path: str, status: int, family: str | None) -> None:
    got, content_type, body = request(served.url + path)
    assert got == status
    if family is not None:
        assert content_type == CONTENT_TYPE_LATEST
        assert family in families(body)


def test_server_control_changes_rate_and_replicas(served: MetricsServer) -> None:
    status, _, body = request(served.url + "/control", b'{"rate_per_s": 2.5, "replicas": {"decode": 3}}')
    assert status == 200
    state = json.loads(body)
    assert state["rate_per_s"] == 2.5
    assert state["replicas"] == {"prefill": 2, "decode": 3}
    assert state["ready"]["decode"] == 2  # the new replica cold-starts for 30 simulated seconds

    def ready() -> bool:
        return bool(json.loads(request(served.url + "/control")[2])["ready"]["decode"] == 3)

    wait_until(ready, what="the third decode replica to be ready", timeout_s=20)
    status, _, body = request(served.url + "/control", b'{"replicas": {"decode": -1}}')
    assert status == 400 and "decode" in json.loads(body)["error"]


def test_server_truth(served: MetricsServer) -> None:
    def enough() -> dict[str, float] | None:
        status, _, body = request(served.url + "/truth?window_s=120")
        truth: dict[str, float] = json.loads(body)
        assert status == 200
        return truth if truth["end_s"] >= 240.0 else None

    truth = wait_until(enough, what="240 simulated seconds", timeout_s=30)
    assert truth["end_s"] - truth["start_s"] == pytest.approx(120.0)
    assert truth["arrival_rate_per_s"] == pytest.approx(5.0, rel=0.3)
    assert truth["ttft_p50_s"] <= truth["ttft_p90_s"]
    assert truth["itl_mean_s"] > 0 and truth["isl_mean_tokens"] > 0
    status, _, body = request(served.url + "/truth?window_s=-5")
    assert status == 400 and "window_s" in json.loads(body)["error"]


def test_server_rejects_a_pool_engine_that_is_a_frontend() -> None:
    live = LiveFleet(config("Aggregated"), 1.0)
    with pytest.raises(ValueError, match="frontend"):
        MetricsServer(live, model=MODEL, engine="dynamo")  # type: ignore[arg-type]
