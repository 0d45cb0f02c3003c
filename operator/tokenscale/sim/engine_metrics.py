"""The metric families each serving engine exports, at one `FleetSnapshot` of a simulated fleet.

Called by `sim.exporter` (its `GET /metrics/<role>`) and by the tests. `render(snapshot, role, engine,
model)` is the Prometheus text exposition of what one pool's engines (or, for role "frontend", the
Dynamo frontend) would export: the real engines' metric names (those the planner reads come from
`metrics.presets`, newest name of each), types and labels, the snapshot's cumulative counters and
histograms as they are, and the pool's gauges. One pool is one scrape target: its gauges are the
pool's totals (running, waiting) or its pool-wide fraction (KV use), as a `sum`/`avg` over replicas
would give.

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
"""

from __future__ import annotations

from typing import Literal

from prometheus_client.metrics_core import CounterMetricFamily, Metric

from tokenscale.api import Role
from tokenscale.metrics.presets import PRESETS
from tokenscale.sim.exposition import counter, exposition, gauge, histogram
from tokenscale.sim.snapshot import FleetSnapshot

ExportEngine = Literal["vllm", "sglang", "trtllm", "dynamo"]
WorkerEngine = Literal["vllm", "sglang", "trtllm"]  # engines that run in the pools (Dynamo is a frontend)
ExportRole = Literal["prefill", "decode", "aggregated", "frontend"]
EXPORT_ENGINES: tuple[ExportEngine, ...] = ("vllm", "sglang", "trtllm", "dynamo")
WORKER_ENGINES: tuple[WorkerEngine, ...] = ("vllm", "sglang", "trtllm")
EXPORT_ROLES: tuple[ExportRole, ...] = ("prefill", "decode", "aggregated", "frontend")

# vLLM creates a request_success_total series per finish reason; the simulator's requests all stop.
_VLLM_FINISH_REASONS = ("stop", "length", "abort")


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
    return exposition(families)


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
            histogram(p.ttft[0], "Histogram of time to first token in seconds.", s.ttft_s, labels),
            histogram(p.itl[0], "Histogram of inter-token latency in seconds.", s.itl_s, labels),
            histogram(
                p.tpot[0],
                "Histogram of time_per_output_token_seconds per request.",
                s.tpot_s,
                labels,
            ),
            histogram(
                "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", s.e2e_s, labels
            ),
            histogram(_named(p.isl.histogram), "Number of prefill tokens processed.", s.prompt_tokens, labels),
            histogram(_named(p.osl.histogram), "Number of generation tokens processed.", s.generation_tokens, labels),
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
            counter(
                "vllm:prompt_tokens_total",
                "Number of prefill tokens processed.",
                s.first_token_prompt_tokens_total,
                labels,
            ),
            counter(
                "vllm:generation_tokens_total",
                "Number of generation tokens processed.",
                s.generation_tokens_total,
                labels,
            ),
        ]
    else:
        out.append(
            counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.", s.prompt_tokens_total, labels)
        )
    if role != "decode":
        # Disaggregated: the prefill FCFS queue and prefill service; Aggregated: the pool's own.
        out += [
            histogram(
                "vllm:request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.",
                s.queue_time_s,
                labels,
            ),
            histogram(
                _named(p.prefill_time),
                "Histogram of time spent in PREFILL phase for request.",
                s.prefill_time_s,
                labels,
            ),
        ]
    out += [
        gauge(_named(p.running), "Number of requests in model execution batches.", pool.running_requests, labels),
        gauge(_named(p.waiting), "Number of requests waiting to be processed.", pool.waiting_requests, labels),
        gauge(p.kv_usage[0], "KV-cache usage. 1 means 100 percent usage.", pool.kv_usage_fraction, labels),
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
            histogram(p.ttft[0], "Histogram of time to first token in seconds.", s.ttft_s, labels),
            histogram(p.itl[0], "Histogram of inter-token latency in seconds.", s.itl_s, labels),
            histogram(
                p.tpot[0],
                "Histogram of time per output token in seconds.",
                s.tpot_s,
                labels,
            ),
            histogram(
                "sglang:e2e_request_latency_seconds",
                "Histogram of End-to-end request latency in seconds",
                s.e2e_s,
                labels,
            ),
            counter(_named(p.isl.tokens_counter), "Number of prefill tokens processed.", s.prompt_tokens.sum, labels),
            counter(
                _named(p.osl.tokens_counter),
                "Number of generation tokens processed.",
                s.generation_tokens.sum,
                labels,
            ),
            counter(p.finished_requests, "Number of requests processed.", float(s.finished_total), labels),
        ]
    else:
        out.append(
            counter(_named(p.isl.tokens_counter), "Number of prefill tokens processed.", s.prompt_tokens_total, labels)
        )
    out += [
        gauge(_named(p.running), "The number of running requests.", pool.running_requests, labels),
        gauge(_named(p.waiting), "The number of requests in the waiting queue.", pool.waiting_requests, labels),
        gauge(p.kv_usage[0], "The token usage.", pool.kv_usage_fraction, labels),
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
            histogram(p.ttft[0], "Histogram of time to first token in seconds.", s.ttft_s, labels),
            histogram(
                p.tpot[0],
                "Histogram of time per output token in seconds.",
                s.tpot_s,
                labels,
            ),
            histogram(
                "trtllm_e2e_request_latency_seconds",
                "Histogram of end to end request latency in seconds.",
                s.e2e_s,
                labels,
            ),
            success,
        ]
    if role != "decode":
        out.append(
            histogram(
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
        gauge(p.in_system[0], "Number of inflight requests", s.in_system, labels),
        gauge(_named(p.waiting), "Number of requests in HTTP processing queue", queued, labels),
        counter(
            "dynamo_frontend_output_tokens_total",
            "Total number of output tokens generated (updates in real-time)",
            s.generation_tokens_total,
            labels,
        ),
        histogram("dynamo_frontend_request_duration_seconds", "Duration of LLM requests", s.e2e_s, labels),
        histogram(_named(p.isl.histogram), "Input sequence length in tokens", s.prompt_tokens, labels),
        histogram(_named(p.osl.histogram), "Output sequence length in tokens", s.generation_tokens, labels),
        histogram(p.ttft[0], "Time to first token in seconds", s.ttft_s, labels),
        histogram(p.itl[0], "Inter-token latency in seconds", s.itl_s, labels),
    ]
