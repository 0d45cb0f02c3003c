"""Engine metrics of a simulated fleet, served over HTTP so that a real Prometheus can scrape it.

Called by `tokenscale simulate --serve-metrics PORT` and by the tests. Three parts:

- `render(snapshot, role, engine, model)`: the Prometheus text exposition of what one pool's engines
  (or, for role "frontend", the Dynamo frontend) would export at one `FleetSnapshot`: the real
  engines' metric names (those the planner reads come from `metrics.presets`, newest name of each),
  types and labels, the snapshot's cumulative counters and histograms as
  they are, and the pool's gauges. One pool is one scrape target: its gauges are the pool's totals
  (running, waiting) or its pool-wide fraction (KV use), as a `sum`/`avg` over replicas would give.
- `LiveFleet`: one `Fleet` run in wall-clock time × `speedup` on a background thread, with Poisson
  arrivals drawn as time goes on at a rate that can change while it runs.
- `MetricsServer`: a threading HTTP server with `GET /metrics/<role>`, a small control API
  (`POST /control`, `GET /control`) and `GET /truth`, the ground truth from per-request records.

Which pool exports what (Disaggregated): the user-facing request metrics (TTFT, ITL/TPOT, e2e,
token lengths, finished requests) come from the serving pool (decode, or aggregated); the prefill
pool exports its own gauges, its prompt-token counter and (vLLM) its queue and prefill-time
histograms. Real prefill engines also count their one-token requests as finished and observe a
TTFT for them; that is left out here (`metricsLabels` keep them apart in a real deployment anyway).

Fidelity notes:
- Histogram buckets are vLLM's for every engine (`sim.histogram`): the simulator observes only
  into those. vLLM and TensorRT-LLM use these bounds; SGLang's and Dynamo's defaults differ (both
  are configurable: SGLang's `--bucket-*` server arguments, Dynamo's `DYN_METRICS_*` variables).
- vLLM counts prompt tokens at a request's first token (`first_token_prompt_tokens_total`); SGLang
  counts prompt and generation tokens when a request finishes (the token-count histograms' sums).
- Latencies are simulated seconds. With `speedup` s, a counter grows s times faster per wall second
  than per simulated second, so a PromQL `rate()` reads s × the simulated rate.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, cast
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from tokenscale.api import Role
from tokenscale.metrics.presets import PRESETS
from tokenscale.sim.fleet import Fleet, FleetConfig, FleetSnapshot, RequestRecords
from tokenscale.sim.histogram import HistogramSnapshot
from tokenscale.sim.workload import LengthDistribution, make_workload

log = logging.getLogger(__name__)

# prometheus_client's own rendering of a float label value (le="1.0", "2.5", "+Inf"); it is untyped.
_go_float = cast(Callable[[float], str], floatToGoString)

FloatArray = npt.NDArray[np.float64]

ExportEngine = Literal["vllm", "sglang", "trtllm", "dynamo"]
WorkerEngine = Literal["vllm", "sglang", "trtllm"]  # engines that run in the pools (Dynamo is a frontend)
ExportRole = Literal["prefill", "decode", "aggregated", "frontend"]
EXPORT_ENGINES: tuple[ExportEngine, ...] = ("vllm", "sglang", "trtllm", "dynamo")
WORKER_ENGINES: tuple[WorkerEngine, ...] = ("vllm", "sglang", "trtllm")
EXPORT_ROLES: tuple[ExportRole, ...] = ("prefill", "decode", "aggregated", "frontend")

# The synthetic generator's default lengths (`sim.workload.synthetic_workload`).
DEFAULT_ISL = LengthDistribution(1000.0, 1.5, 16, 16384)
DEFAULT_OSL = LengthDistribution(250.0, 1.0, 1, 4096)

# vLLM creates a request_success_total series per finish reason; the simulator's requests all stop.
_VLLM_FINISH_REASONS = ("stop", "length", "abort")


# ------------------------------------------------------------------ render


def render(snapshot: FleetSnapshot, role: ExportRole, engine: ExportEngine, model: str) -> bytes:
    """Prometheus text exposition of one pool's engines (or the Dynamo frontend) at `snapshot`.

    `role` "frontend" needs engine "dynamo" (one frontend for the whole fleet); a pool role needs a
    worker engine (vllm, sglang, trtllm) and a pool the snapshot has. Raises ValueError otherwise.
    """
    if engine not in EXPORT_ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(EXPORT_ENGINES)}")
    if role == "frontend":
        if engine != "dynamo":
            raise ValueError(f"role 'frontend' is Dynamo's frontend; {engine} exports per pool")
        families = _dynamo_frontend(snapshot, model)
    else:
        if role not in snapshot.pools:
            raise ValueError(f"no {role!r} pool in this fleet (pools: {', '.join(snapshot.pools)})")
        if engine == "vllm":
            families = _vllm(snapshot, role, model)
        elif engine == "sglang":
            families = _sglang(snapshot, role, model)
        elif engine == "trtllm":
            families = _trtllm(snapshot, role, model)
        else:
            raise ValueError("engine 'dynamo' exports only the frontend; pools run vllm, sglang or trtllm")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


class _Families(Collector):
    """A collector that yields a fixed list of metric families (one scrape's worth)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


def _histogram(name: str, doc: str, h: HistogramSnapshot, labels: Mapping[str, str]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    buckets = [(_go_float(b), float(c)) for b, c in zip(h.bounds, h.bucket_counts[:-1], strict=True)]
    buckets.append(("+Inf", float(h.bucket_counts[-1])))
    family.add_metric(list(labels.values()), buckets, h.sum)
    return family


def _counter(name: str, doc: str, value: float, labels: Mapping[str, str]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _gauge(name: str, doc: str, value: float, labels: Mapping[str, str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _named(series: str | None) -> str:
    """A series the engine's preset names: the exporter serves what the planner reads (`metrics.presets`)."""
    if series is None:
        raise ValueError("the engine preset names no such series")
    return series


def _vllm(s: FleetSnapshot, role: Role, model: str) -> list[Metric]:
    """vLLM V1 (`vllm/v1/metrics/loggers.py`): labels model_name and engine (the engine index)."""
    p = PRESETS["vllm"]
    labels = {p.model_label: model, "engine": "0"}
    pool = s.pools[role]
    out: list[Metric] = []
    if role != "prefill":
        out += [
            _histogram(p.ttft[0], "Histogram of time to first token in seconds.", s.ttft_s, labels),
            _histogram(p.itl[0], "Histogram of inter-token latency in seconds.", s.itl_s, labels),
            _histogram(
                p.tpot[0],
                "Histogram of time_per_output_token_seconds per request.",
                s.tpot_s,
                labels,
            ),
            _histogram(
                "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", s.e2e_s, labels
            ),
            _histogram(_named(p.isl.histogram), "Number of prefill tokens processed.", s.prompt_tokens, labels),
            _histogram(_named(p.osl.histogram), "Number of generation tokens processed.", s.generation_tokens, labels),
        ]
        success = CounterMetricFamily(
            p.finished_requests,
            "Count of successfully processed requests.",
            labels=[*labels, "finished_reason"],
        )
        for reason in _VLLM_FINISH_REASONS:
            success.add_metric([*labels.values(), reason], float(s.finished_total) if reason == "stop" else 0.0)
        out += [
            success,
            _counter(
                "vllm:prompt_tokens_total",
                "Number of prefill tokens processed.",
                s.first_token_prompt_tokens_total,
                labels,
            ),
            _counter(
                "vllm:generation_tokens_total",
                "Number of generation tokens processed.",
                s.generation_tokens_total,
                labels,
            ),
        ]
    else:
        out.append(
            _counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.", s.prompt_tokens_total, labels)
        )
    if role != "decode":
        # Disaggregated: the prefill FCFS queue and prefill service; Aggregated: the pool's own.
        out += [
            _histogram(
                "vllm:request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.",
                s.queue_time_s,
                labels,
            ),
            _histogram(
                _named(p.prefill_time),
                "Histogram of time spent in PREFILL phase for request.",
                s.prefill_time_s,
                labels,
            ),
        ]
    out += [
        _gauge(_named(p.running), "Number of requests in model execution batches.", pool.running_requests, labels),
        _gauge(_named(p.waiting), "Number of requests waiting to be processed.", pool.waiting_requests, labels),
        _gauge(p.kv_usage[0], "KV-cache usage. 1 means 100 percent usage.", pool.kv_usage_fraction, labels),
    ]
    return out


def _sglang(s: FleetSnapshot, role: Role, model: str) -> list[Metric]:
    """SGLang (`sglang/srt/metrics/collector.py`): labels model_name and engine_type."""
    p = PRESETS["sglang"]
    labels = {p.model_label: model, "engine_type": "unified" if role == "aggregated" else role}
    pool = s.pools[role]
    out: list[Metric] = []
    if role != "prefill":
        # SGLang counts a request's prompt and generated tokens when it finishes.
        out += [
            _histogram(p.ttft[0], "Histogram of time to first token in seconds.", s.ttft_s, labels),
            _histogram(p.itl[0], "Histogram of inter-token latency in seconds.", s.itl_s, labels),
            _histogram(
                p.tpot[0],
                "Histogram of time per output token in seconds.",
                s.tpot_s,
                labels,
            ),
            _histogram(
                "sglang:e2e_request_latency_seconds",
                "Histogram of End-to-end request latency in seconds",
                s.e2e_s,
                labels,
            ),
            _counter(_named(p.isl.tokens_counter), "Number of prefill tokens processed.", s.prompt_tokens.sum, labels),
            _counter(
                _named(p.osl.tokens_counter),
                "Number of generation tokens processed.",
                s.generation_tokens.sum,
                labels,
            ),
            _counter(p.finished_requests, "Number of requests processed.", float(s.finished_total), labels),
        ]
    else:
        out.append(
            _counter(_named(p.isl.tokens_counter), "Number of prefill tokens processed.", s.prompt_tokens_total, labels)
        )
    out += [
        _gauge(_named(p.running), "The number of running requests.", pool.running_requests, labels),
        _gauge(_named(p.waiting), "The number of requests in the waiting queue.", pool.waiting_requests, labels),
        _gauge(p.kv_usage[0], "The token usage.", pool.kv_usage_fraction, labels),
    ]
    return out


def _trtllm(s: FleetSnapshot, role: Role, model: str) -> list[Metric]:
    """TensorRT-LLM's MetricsCollector as Dynamo exposes it (prefix trtllm_): model_name, engine_type."""
    p = PRESETS["trtllm"]
    labels = {p.model_label: model, "engine_type": "trtllm"}
    out: list[Metric] = []
    if role != "prefill":
        success = CounterMetricFamily(
            p.finished_requests,
            "Count of successfully processed requests.",
            labels=[*labels, "finished_reason"],
        )
        success.add_metric([*labels.values(), "stop"], float(s.finished_total))
        out += [
            _histogram(p.ttft[0], "Histogram of time to first token in seconds.", s.ttft_s, labels),
            _histogram(
                p.tpot[0],
                "Histogram of time per output token in seconds.",
                s.tpot_s,
                labels,
            ),
            _histogram(
                "trtllm_e2e_request_latency_seconds",
                "Histogram of end to end request latency in seconds.",
                s.e2e_s,
                labels,
            ),
            success,
        ]
    if role != "decode":
        out.append(
            _histogram(
                "trtllm_request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.",
                s.queue_time_s,
                labels,
            )
        )
    return out


def _dynamo_frontend(s: FleetSnapshot, model: str) -> list[Metric]:
    """Dynamo's HTTP frontend (`lib/llm/src/http/service/metrics.rs`): label model, whole fleet."""
    p = PRESETS["dynamo"]
    labels = {p.model_label: model}
    requests = CounterMetricFamily(
        p.finished_requests,
        "Total number of LLM requests processed",
        labels=[p.model_label, "endpoint", "request_type", "status"],
    )
    requests.add_metric([model, "chat_completions", "stream", "success"], float(s.finished_total))
    # Queued: from the HTTP handler until the first token (Dynamo's http queue gauge).
    queued = max(s.arrivals_total - round(s.ttft_s.count), 0)
    return [
        requests,
        _gauge(p.in_system[0], "Number of inflight requests", s.in_system, labels),
        _gauge(_named(p.waiting), "Number of requests in HTTP processing queue", queued, labels),
        _counter(
            "dynamo_frontend_output_tokens_total",
            "Total number of output tokens generated (updates in real-time)",
            s.generation_tokens_total,
            labels,
        ),
        _histogram("dynamo_frontend_request_duration_seconds", "Duration of LLM requests", s.e2e_s, labels),
        _histogram(_named(p.isl.histogram), "Input sequence length in tokens", s.prompt_tokens, labels),
        _histogram(_named(p.osl.histogram), "Output sequence length in tokens", s.generation_tokens, labels),
        _histogram(p.ttft[0], "Time to first token in seconds", s.ttft_s, labels),
        _histogram(p.itl[0], "Inter-token latency in seconds", s.itl_s, labels),
    ]


# ------------------------------------------------------------------ ground truth


@dataclass(frozen=True)
class Truth:
    """What really happened in (start_s, end_s] of simulated time, from exact per-request records.

    Each figure is over the requests whose event falls in the window, as a metric observed at that
    event counts them: arrivals (rate), first tokens (TTFT, as the TTFT histogram), finishes (ISL,
    OSL, TPOT, ITL). TPOT per request = (finish − first token)/(OSL − 1), OSL > 1 only; ITL mean =
    Σ(finish − first token)/Σ(OSL − 1), the token-weighted mean an ITL histogram's sum/count gives;
    ITL quantiles weight each request's TPOT by its OSL − 1 tokens. None where nothing happened.
    """

    start_s: float
    end_s: float
    arrivals: int
    arrival_rate_per_s: float | None
    first_tokens: int
    finished: int
    isl_mean_tokens: float | None
    osl_mean_tokens: float | None
    ttft_mean_s: float | None
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    itl_mean_s: float | None
    itl_p50_s: float | None
    itl_p90_s: float | None
    tpot_p50_s: float | None
    tpot_p90_s: float | None

    def as_json(self) -> dict[str, float | int | None]:
        return asdict(self)


def ground_truth(records: RequestRecords, start_s: float, end_s: float) -> Truth:
    """The `Truth` over (start_s, end_s] from `Fleet.records()`."""
    if not end_s >= start_s:
        raise ValueError(f"window end {end_s} is before its start {start_s}")
    span_s = end_s - start_s

    def within(t: FloatArray) -> npt.NDArray[np.bool_]:
        out: npt.NDArray[np.bool_] = (t > start_s) & (t <= end_s)  # NaN (not yet) compares False
        return out

    arrived = within(records.arrival_s)
    first = within(records.first_token_s)
    done = within(records.finish_s)
    ttft = records.ttft_s[first]
    steps = (records.osl_tokens[done] - 1).astype(np.float64)
    decode_s = (records.finish_s - records.first_token_s)[done]
    multi = steps > 0
    tpot = decode_s[multi] / steps[multi]
    n_arrived = int(arrived.sum())
    return Truth(
        start_s=start_s,
        end_s=end_s,
        arrivals=n_arrived,
        arrival_rate_per_s=n_arrived / span_s if span_s > 0 else None,
        first_tokens=len(ttft),
        finished=int(done.sum()),
        isl_mean_tokens=_mean(records.isl_tokens[done].astype(np.float64)),
        osl_mean_tokens=_mean(steps + 1.0),
        ttft_mean_s=_mean(ttft),
        ttft_p50_s=_quantile(ttft, 0.5),
        ttft_p90_s=_quantile(ttft, 0.9),
        itl_mean_s=float(decode_s[multi].sum() / steps[multi].sum()) if multi.any() else None,
        itl_p50_s=_weighted_quantile(tpot, steps[multi], 0.5),
        itl_p90_s=_weighted_quantile(tpot, steps[multi], 0.9),
        tpot_p50_s=_quantile(tpot, 0.5),
        tpot_p90_s=_quantile(tpot, 0.9),
    )


def _mean(x: FloatArray) -> float | None:
    return float(x.mean()) if len(x) else None


def _quantile(x: FloatArray, q: float) -> float | None:
    return float(np.quantile(x, q)) if len(x) else None


def _weighted_quantile(x: FloatArray, weights: FloatArray, q: float) -> float | None:
    """The smallest x whose cumulative weight reaches q of the total (a weighted lower quantile)."""
    if not len(x):
        return None
    order = np.argsort(x, kind="stable")
    cumulative = np.cumsum(weights[order])
    i = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
    return float(x[order][min(i, len(x) - 1)])


# ------------------------------------------------------------------ live fleet


@dataclass(frozen=True)
class LiveState:
    """The control state of a `LiveFleet` at simulated time `time_s`."""

    time_s: float
    speedup: float
    rate_per_s: float
    replicas: Mapping[Role, int]  # starting + ready
    ready: Mapping[Role, int]

    def as_json(self) -> dict[str, object]:
        return {
            "time_s": self.time_s,
            "speedup": self.speedup,
            "rate_per_s": self.rate_per_s,
            "replicas": dict(self.replicas),
            "ready": dict(self.ready),
        }


class LiveFleet:
    """One `Fleet` run in wall-clock time × `speedup`, with Poisson arrivals drawn as it goes.

    Simulated time is (clock() − clock() at construction) × speedup. Every public call first brings
    the fleet up to that time: it draws the arrivals of the elapsed interval, a Poisson process at the
    rate in force (N ~ Poisson(rate·Δt), times uniform in the interval; lengths from `isl`/`osl`), and
    runs the fleet there. `start()` adds a thread that does so every `tick_s` wall seconds, so the
    fleet keeps up between calls; after `stop()` the fleet stands still. All public methods are
    thread-safe. Given a seed, the same sequence of simulated times gives the same run (arrivals and
    cold-start jitter draw from separate streams of the seed).
    """

    def __init__(
        self,
        config: FleetConfig,
        rate_per_s: float,
        *,
        speedup: float = 1.0,
        seed: int = 0,
        isl: LengthDistribution = DEFAULT_ISL,
        osl: LengthDistribution = DEFAULT_OSL,
        tick_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_rate(rate_per_s)
        if not (speedup > 0.0 and math.isfinite(speedup)):
            raise ValueError(f"speedup must be positive and finite, got {speedup}")
        if not tick_s > 0.0:
            raise ValueError(f"tick_s must be positive, got {tick_s}")
        fleet_seed, arrival_seed = np.random.SeedSequence(seed).spawn(2)
        empty = make_workload("live", np.empty(0), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
        self._fleet = Fleet(empty, config, np.random.default_rng(fleet_seed))
        self._rng = np.random.default_rng(arrival_seed)
        self._rate_per_s = rate_per_s
        self._speedup = speedup
        self._isl = isl
        self._osl = osl
        self._tick_s = tick_s
        self._clock = clock
        self._origin = clock()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    @property
    def roles(self) -> tuple[Role, ...]:
        return tuple(self._fleet.config.pools)

    def start(self) -> LiveFleet:
        """Start the thread that advances the fleet every `tick_s`; returns self."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("a LiveFleet starts once")
        self._thread = threading.Thread(target=self._run, name="tokenscale-live-fleet")
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop advancing and join the thread (idempotent)."""
        with self._lock:
            self._stopped = True
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RuntimeError(f"the live-fleet thread did not stop within {timeout_s} s")

    def __enter__(self) -> LiveFleet:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def set_rate(self, rate_per_s: float) -> None:
        """Arrivals per simulated second from now on (the elapsed time keeps the old rate)."""
        _check_rate(rate_per_s)
        with self._lock:
            self._sync()
            self._rate_per_s = rate_per_s

    def set_replicas(self, role: Role, n: int) -> None:
        """Scale `role` to `n` replicas now (as `Fleet.set_replicas`)."""
        with self._lock:
            self._sync()
            self._fleet.set_replicas(role, n, self._fleet.now_s)

    def snapshot(self) -> FleetSnapshot:
        """The fleet's metrics now."""
        with self._lock:
            self._sync()
            return self._fleet.snapshot(self._fleet.now_s)

    def state(self) -> LiveState:
        with self._lock:
            self._sync()
            return self._state()

    def truth(self, window_s: float) -> Truth:
        """Ground truth over the last `window_s` simulated seconds (from 0 if the run is shorter)."""
        if not (window_s > 0.0 and math.isfinite(window_s)):
            raise ValueError(f"window_s must be positive and finite, got {window_s}")
        with self._lock:
            self._sync()
            now = self._fleet.now_s
            records = self._fleet.records()
        return ground_truth(records, max(now - window_s, 0.0), now)

    # The lock is held by the callers of the methods below.

    def _state(self) -> LiveState:
        snap = self._fleet.snapshot(self._fleet.now_s)
        return LiveState(
            time_s=snap.time_s,
            speedup=self._speedup,
            rate_per_s=self._rate_per_s,
            replicas={r: p.replicas_current for r, p in snap.pools.items()},
            ready={r: p.replicas_ready for r, p in snap.pools.items()},
        )

    def _sync(self) -> None:
        if self._stopped:
            return
        now = self._fleet.now_s
        t = (self._clock() - self._origin) * self._speedup
        if not t > now:
            return
        n = int(self._rng.poisson(self._rate_per_s * (t - now)))
        arrivals = np.sort(now + self._rng.random(n) * (t - now))
        self._fleet.append_arrivals(arrivals, self._isl.sample(self._rng, n), self._osl.sample(self._rng, n))
        self._fleet.run_until(t)

    def _run(self) -> None:
        while not self._stopping.wait(self._tick_s):
            with self._lock:
                self._sync()


def _check_rate(rate_per_s: float) -> None:
    if not (rate_per_s >= 0.0 and math.isfinite(rate_per_s)):
        raise ValueError(f"rate_per_s must be finite and ≥ 0, got {rate_per_s}")


# ------------------------------------------------------------------ HTTP server


@dataclass(frozen=True)
class Control:
    """A parsed `POST /control` body: a new rate and/or replica counts."""

    rate_per_s: float | None
    replicas: Mapping[Role, int]


def parse_control(body: bytes, roles: tuple[Role, ...]) -> Control:
    """Parse `{"rate_per_s": float?, "replicas": {role: int}?}`; ValueError naming the bad field."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"body is not JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    unknown = set(data) - {"rate_per_s", "replicas"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; expected rate_per_s and/or replicas")
    rate = data.get("rate_per_s")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise ValueError("rate_per_s must be a number")
        _check_rate(float(rate))
    raw = data.get("replicas", {})
    if not isinstance(raw, dict):
        raise ValueError("replicas must be an object of role: count")
    replicas: dict[Role, int] = {}
    for role, n in raw.items():
        if role not in roles:
            raise ValueError(f"replicas: no {role!r} pool in this fleet (pools: {', '.join(roles)})")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"replicas.{role} must be an integer ≥ 0")
        replicas[cast(Role, role)] = n
    return Control(None if rate is None else float(rate), replicas)


class _Server(ThreadingHTTPServer):
    # Join request threads on close (HTTP/1.0: a handler ends with its one request).
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], app: MetricsServer) -> None:
        self.app = app
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    timeout = 10.0  # seconds to read a request
    _MAX_BODY = 65536

    def do_GET(self) -> None:
        app = cast(_Server, self.server).app
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "metrics":
            body = app.metrics(parts[1])
            if body is None:
                self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no role {parts[1]!r}; try {', '.join(app.roles)}"})
            else:
                self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, body)
        elif url.path == "/truth":
            query = parse_qs(url.query)
            try:
                window_s = float(query.get("window_s", ["60"])[-1])
                truth = app.live.truth(window_s)
            except ValueError as err:
                self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
                return
            self._send_json(HTTPStatus.OK, truth.as_json())
        elif url.path == "/control":
            self._send_json(HTTPStatus.OK, app.live.state().as_json())
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such path {url.path}"})

    def do_POST(self) -> None:
        app = cast(_Server, self.server).app
        if urlsplit(self.path).path != "/control":
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > self._MAX_BODY:
            self._send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
            return
        try:
            control = parse_control(self.rfile.read(length), app.live.roles)
        except ValueError as err:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
            return
        self._send_json(HTTPStatus.OK, app.control(control).as_json())

    def _send_json(self, status: HTTPStatus, payload: Mapping[str, object]) -> None:
        self._send(status, "application/json", json.dumps(payload).encode())

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("%s went away before the answer (a scraper stopping)", self.address_string())

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class MetricsServer:
    """HTTP endpoints over a `LiveFleet`, for a real Prometheus and for tests and demos.

    - `GET /metrics/<role>`: `render` of the pool `role` with `engine`, or of the Dynamo frontend
      for role "frontend"; 404 for a role the fleet does not have.
    - `POST /control` with `{"rate_per_s": float?, "replicas": {"decode": 3, ...}?}`: applies it and
      answers 200 with the new `LiveState` as JSON (400 naming the bad field); `GET /control` reads it.
    - `GET /truth?window_s=60`: `LiveFleet.truth(window_s)` as JSON (None → null).

    The socket is bound on construction (port 0 → an ephemeral port, see `port`); `start()` serves
    on a thread; `close()` stops it and joins every thread. Use it as a context manager.
    """

    def __init__(
        self,
        live: LiveFleet,
        *,
        model: str,
        engine: WorkerEngine = "vllm",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if engine not in WORKER_ENGINES:
            raise ValueError(
                f"pools run {', '.join(WORKER_ENGINES)}, not {engine!r} (Dynamo's frontend is /metrics/frontend)"
            )
        self.live = live
        self.model = model
        self.engine: WorkerEngine = engine
        self.roles: tuple[ExportRole, ...] = (*live.roles, "frontend")
        self._httpd = _Server((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._httpd.server_address[0])
        return f"http://{host}:{self.port}"

    def metrics(self, role: str) -> bytes | None:
        """The exposition for `role`, or None if the fleet has no such role."""
        if role == "frontend":
            return render(self.live.snapshot(), "frontend", "dynamo", self.model)
        for pool in self.live.roles:
            if pool == role:
                return render(self.live.snapshot(), pool, self.engine, self.model)
        return None

    def control(self, control: Control) -> LiveState:
        if control.rate_per_s is not None:
            self.live.set_rate(control.rate_per_s)
        for role, n in control.replicas.items():
            self.live.set_replicas(role, n)
        return self.live.state()

    def start(self) -> MetricsServer:
        if self._thread is not None:
            raise RuntimeError("a MetricsServer starts once")
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="tokenscale-metrics-server"
        )
        self._thread.start()
        return self

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop serving, close the socket and join the server's threads."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RuntimeError(f"the metrics server did not stop within {timeout_s} s")
        self._httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()
