"""Engine presets: which Prometheus series carry each signal the planner needs, per serving engine.

Called by `metrics.observe`. Names follow each engine's exporter:
- vLLM (`vllm/v1/metrics/loggers.py`; label `model_name`). Per-request TPOT is
  `vllm:request_time_per_output_token_seconds` (one sample per finished request: decode time over
  output tokens − 1). Per-token latency is `vllm:inter_token_latency_seconds`, which replaced the
  per-token `vllm:time_per_output_token_seconds` (v0.10); both are tried, newest first.
  `vllm:kv_cache_usage_perc` replaced `vllm:gpu_cache_usage_perc` (v0.10), likewise.
- SGLang (`sglang/srt/metrics/collector.py`; labels `model_name`, `engine_type`). No request-length
  histograms: mean lengths are token counters divided by finished requests. Per-request TPOT is
  `sglang:time_per_output_token_seconds` (observed when a request finishes), per-token
  `sglang:inter_token_latency_seconds`.
- TensorRT-LLM (`trtllm-serve` metrics, prefix `trtllm_`; labels `model_name`, `engine_type`). It
  exports latencies and finished requests, not lengths or queue gauges: such signals are reported
  missing, and `engine: custom` supplies them. Its `trtllm_time_per_output_token_seconds` is per
  request; it has no per-token series, so the mean step time is read from it (noted approximate).
- Dynamo frontend (`dynamo_frontend_*`; label `model`): one frontend in front of prefill and
  decode workers sees every user request, so all request signals come from it. It exports only the
  per-token inter-token latency: the TPOT objective is judged on it, with a data note saying so.

TPOT means per-request TPOT everywhere (the objective, the planner's prediction, the simulator's
score); `tpot` lists the per-request series, `itl` the per-token ones.

Where the user-facing series live (DESIGN.md, "Metrics presets"): with vLLM, SGLang and
TensorRT-LLM in disaggregated serving the prefill engines also count their (one-token) requests, so
request, latency and length series are read from the serving pool (decode, or the aggregated pool)
through its `metricsLabels`; Dynamo reads them from the frontend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tokenscale.api import Engine

RequestSource = Literal["serving-pool", "frontend"]


@dataclass(frozen=True)
class LengthSeries:
    """Where a request-length signal lives: a histogram (mean and spread) or a token counter (mean only)."""

    histogram: str | None = None
    tokens_counter: str | None = None  # divided by the finished-requests counter


@dataclass(frozen=True)
class EnginePreset:
    """The series of one engine. Tuples list alternatives, newest name first."""

    engine: Engine
    model_label: str
    request_source: RequestSource
    finished_requests: str  # counter of finished requests
    in_system: tuple[str, ...]  # gauges whose sum is requests admitted and not finished
    running: str | None  # gauge, per pool
    waiting: str | None  # gauge, per pool
    ttft: tuple[str, ...]  # histograms
    tpot: tuple[str, ...]  # histograms of per-request TPOT, (e2e − TTFT)/(output tokens − 1)
    itl: tuple[str, ...]  # histograms of per-token inter-token latency (one sample per token)
    isl: LengthSeries
    osl: LengthSeries
    prefill_time: str | None  # histogram of the prefill phase, on the prefill (or aggregated) pool
    kv_usage: tuple[str, ...]  # gauges, fraction in [0, 1]


PRESETS: dict[Engine, EnginePreset] = {
    "vllm": EnginePreset(
        engine="vllm",
        model_label="model_name",
        request_source="serving-pool",
        finished_requests="vllm:request_success_total",
        in_system=("vllm:num_requests_running", "vllm:num_requests_waiting"),
        running="vllm:num_requests_running",
        waiting="vllm:num_requests_waiting",
        ttft=("vllm:time_to_first_token_seconds",),
        tpot=("vllm:request_time_per_output_token_seconds",),
        itl=("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
        isl=LengthSeries(histogram="vllm:request_prompt_tokens"),
        osl=LengthSeries(histogram="vllm:request_generation_tokens"),
        prefill_time="vllm:request_prefill_time_seconds",
        kv_usage=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    ),
    "sglang": EnginePreset(
        engine="sglang",
        model_label="model_name",
        request_source="serving-pool",
        finished_requests="sglang:num_requests_total",
        in_system=("sglang:num_running_reqs", "sglang:num_queue_reqs"),
        running="sglang:num_running_reqs",
        waiting="sglang:num_queue_reqs",
        ttft=("sglang:time_to_first_token_seconds",),
        tpot=("sglang:time_per_output_token_seconds",),
        itl=("sglang:inter_token_latency_seconds",),
        isl=LengthSeries(tokens_counter="sglang:prompt_tokens_total"),
        osl=LengthSeries(tokens_counter="sglang:generation_tokens_total"),
        prefill_time=None,
        kv_usage=("sglang:token_usage",),
    ),
    "trtllm": EnginePreset(
        engine="trtllm",
        model_label="model_name",
        request_source="serving-pool",
        finished_requests="trtllm_request_success_total",
        in_system=(),
        running=None,
        waiting=None,
        ttft=("trtllm_time_to_first_token_seconds",),
        tpot=("trtllm_time_per_output_token_seconds",),
        itl=(),
        isl=LengthSeries(),
        osl=LengthSeries(),
        prefill_time=None,
        kv_usage=(),
    ),
    "dynamo": EnginePreset(
        engine="dynamo",
        model_label="model",
        request_source="frontend",
        finished_requests="dynamo_frontend_requests_total",
        in_system=("dynamo_frontend_inflight_requests",),
        running=None,
        waiting="dynamo_frontend_queued_requests",
        ttft=("dynamo_frontend_time_to_first_token_seconds",),
        tpot=(),
        itl=("dynamo_frontend_inter_token_latency_seconds",),
        isl=LengthSeries(histogram="dynamo_frontend_input_sequence_tokens"),
        osl=LengthSeries(histogram="dynamo_frontend_output_sequence_tokens"),
        prefill_time=None,
        kv_usage=(),
    ),
}
