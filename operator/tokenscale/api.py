"""The InferencePool API (`tokenscale.dev/v1alpha1`): pydantic models of the spec and status.

This module is the single schema of the resource. `tokenscale.crd` generates the CRD from it, the
operator parses every object through it, and `tokenscale validate` checks files with it. Cross-field
rules are written twice on purpose and tested to agree: as pydantic validators here (so the CLI and
the operator reject bad input) and as CEL rules in `json_schema_extra` (so the API server rejects it
at admission on clusters that evaluate CEL, Kubernetes >= 1.25).

Durations are Kubernetes-style strings (`500ms`, `3m`, `1h30m`), parsed once into `Duration`, whose
`.seconds` the rest of the code uses.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, JsonValue, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import core_schema

GROUP = "tokenscale.dev"
VERSION = "v1alpha1"
KIND = "InferencePool"
PLURAL = "inferencepools"
SINGULAR = "inferencepool"
SHORT_NAME = "tspool"
CATEGORY = "tokenscale"

Role = Literal["prefill", "decode", "aggregated"]
Mode = Literal["Disaggregated", "Aggregated"]
Engine = Literal["vllm", "sglang", "trtllm", "dynamo", "custom"]
ForecastMethod = Literal["holt", "ewma", "none"]
Precision = Literal["bf16", "fp8"]

ROLES: tuple[Role, ...] = ("prefill", "decode", "aggregated")
ROLES_BY_MODE: dict[str, tuple[Role, ...]] = {
    "Disaggregated": ("prefill", "decode"),
    "Aggregated": ("aggregated",),
}


def serving_role(mode: Mode) -> Role:
    """The role whose replicas generate tokens and hold the KV cache: decode, or the aggregated pool."""
    return "aggregated" if mode == "Aggregated" else "decode"


def prompt_role(mode: Mode) -> Role:
    """The role whose replicas run the prompts (prefill) and so set TTFT: prefill, or the aggregated pool."""
    return "aggregated" if mode == "Aggregated" else "prefill"


T = TypeVar("T")


class ByRole(Generic[T]):
    """Per-role fields (`prefill`, `decode`, `aggregated`) read as a mapping by role.

    The resource keeps three named fields (what `kubectl explain` and the CRD show); code reads them
    through `get` and `by_role` only, so no caller turns a role into an attribute name. No fields
    of its own: the models below mix it in.
    """

    def get(self, role: Role) -> T | None:
        """The value for `role`, or None when the field is unset."""
        value: T | None = getattr(self, role)  # the one place a role names a field
        return value

    def by_role(self) -> dict[Role, T]:
        """The set fields by role, in the order prefill, decode, aggregated."""
        return {role: value for role in ROLES if (value := self.get(role)) is not None}


# ---------------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------------

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration_s(text: str) -> float:
    """Seconds in a Kubernetes/Go-style duration string such as `500ms`, `3m` or `1h30m`."""
    if not isinstance(text, str) or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(
            f"{text!r} is not a duration: use a number with a unit ms, s, m or h, e.g. '500ms', '30s', '3m'"
        )
    return sum(float(num) * _UNIT_S[unit] for num, unit in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest readable duration string for a number of seconds (`0.5` -> `500ms`)."""
    if seconds < 1.0:
        return f"{seconds * 1000:.4g}ms"
    if seconds < 60.0 or seconds % 60:
        return f"{seconds:.4g}s"
    if seconds % 3600:
        return f"{seconds / 60:g}m"
    return f"{seconds / 3600:g}h"


class Duration:
    """A parsed duration: keeps the text the user wrote and the value in seconds."""

    __slots__ = ("text", "seconds")

    def __init__(self, text: str) -> None:
        self.text = text
        self.seconds = parse_duration_s(text)

    @classmethod
    def of_seconds(cls, seconds: float) -> Duration:
        return cls(format_duration(seconds))

    def __repr__(self) -> str:
        return f"Duration({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Duration) and other.seconds == self.seconds

    def __hash__(self) -> int:
        return hash(self.seconds)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def validate(value: Any) -> Duration:
            if isinstance(value, Duration):
                return value
            if isinstance(value, int | float) and not isinstance(value, bool):
                raise ValueError(f"{value!r} has no unit: write a duration such as '{value}ms' or '{value}s'")
            if not isinstance(value, str):
                raise ValueError(f"a duration must be a string such as '500ms' or '3m', got {value!r}")
            return cls(value)

        return core_schema.no_info_plain_validator_function(
            validate,
            json_schema_input_schema=core_schema.str_schema(pattern=DURATION_PATTERN),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda d: d.text),
        )


def _positive_duration_rule(field: str) -> dict[str, JsonValue]:
    return {
        "rule": f"!has(self.{field}) || duration(self.{field}) > duration('0s')",
        "message": f"{field} must be a positive duration such as '500ms' or '30s'",
    }


# ---------------------------------------------------------------------------------------------
# Spec
# ---------------------------------------------------------------------------------------------


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=False,
    )


class Objective(ApiModel):
    """A latency objective: the given quantile of the latency must not exceed the target."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.quantile > 0.0 && self.quantile < 1.0",
                    "message": "quantile must be strictly between 0 and 1, e.g. 0.9 for p90",
                },
                _positive_duration_rule("target"),
            ]
        }
    )
    quantile: float = Field(
        0.9, gt=0.0, lt=1.0, description="Quantile of the latency distribution, in (0, 1); 0.9 means p90."
    )
    target: Duration = Field(description="Latency target for that quantile, e.g. '500ms'.")

    @model_validator(mode="after")
    def _positive_target(self) -> Objective:
        if self.target.seconds <= 0:
            raise ValueError("target must be a positive duration such as '500ms'")
        return self


class Objectives(ApiModel):
    """Latency objectives of the pool: time to first token and time per output token."""

    ttft: Objective = Field(description="Time to first token objective (user-facing, end to end).")
    tpot: Objective = Field(
        description=(
            "Per-request time per output token objective: each request's (end-to-end latency − TTFT) / "
            "(output tokens − 1), at the quantile over requests. Read from the engine's per-request series "
            "(vLLM vllm:request_time_per_output_token_seconds, SGLang sglang:time_per_output_token_seconds, "
            "TensorRT-LLM trtllm_time_per_output_token_seconds); not the per-token inter-token latency "
            "(vllm:inter_token_latency_seconds), which reads lower when decode steps stall behind prompts."
        )
    )
    attainment: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Optional fraction of requests that must meet both objectives (reported, not planned on).",
    )


class SecretKeyRef(ApiModel):
    """A key in a Secret in the pool's namespace."""

    name: str = Field(min_length=1, description="Name of the Secret.")
    key: str = Field(min_length=1, description="Key within the Secret.")


class PrometheusAuth(ApiModel):
    """Credentials for Prometheus, read by the operator from Secrets."""

    bearer_token_secret_ref: SecretKeyRef | None = Field(None, description="Secret key holding a bearer token.")
    username_secret_ref: SecretKeyRef | None = Field(None, description="Secret key holding a basic-auth user.")
    password_secret_ref: SecretKeyRef | None = Field(None, description="Secret key holding a basic-auth password.")


class PrometheusTLS(ApiModel):
    """TLS settings for the Prometheus connection."""

    ca_secret_ref: SecretKeyRef | None = Field(None, description="Secret key holding a PEM CA bundle.")
    insecure_skip_verify: bool = Field(
        False, description="Skip certificate verification. Only for testing; never the default."
    )


class PrometheusSource(ApiModel):
    """Where the engines' metrics are queried."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_positive_duration_rule("timeout")]})
    url: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="Base URL of the Prometheus HTTP API, e.g. http://prometheus:9090. Unset: the operator's "
        "default (the Helm chart's value prometheus.url).",
    )
    timeout: Duration = Field(Duration("10s"), description="Timeout of one query.")
    auth: PrometheusAuth | None = Field(None, description="Optional credentials.")
    tls: PrometheusTLS | None = Field(None, description="Optional TLS settings.")


class CustomQueries(ApiModel):
    """PromQL for every signal, for engines without a preset. `$window` is replaced by metrics.window."""

    request_rate: str = Field(description="Arrivals per second (offered load).")
    isl_mean: str = Field(description="Mean input (prompt) length in tokens.")
    osl_mean: str = Field(description="Mean output length in tokens.")
    ttft_quantile: str = Field(description="TTFT quantile in seconds; `$quantile` is replaced.")
    tpot_quantile: str = Field(
        description="Per-request TPOT quantile in seconds ((e2e − TTFT)/(output tokens − 1)); `$quantile` is replaced."
    )
    running: str | None = Field(None, description="Running requests (sum over replicas).")
    waiting: str | None = Field(None, description="Waiting requests (sum over replicas).")
    kv_usage: str | None = Field(None, description="KV-cache use as a fraction in [0, 1].")


class MetricsSource(ApiModel):
    """The metrics the planner reads: a Prometheus, an engine preset and label matchers."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.engine != 'custom' || has(self.queries)",
                    "message": "engine 'custom' needs metrics.queries with the PromQL of every signal",
                },
                _positive_duration_rule("window"),
            ]
        }
    )
    prometheus: PrometheusSource = Field(
        default_factory=PrometheusSource, description="The Prometheus to query (default: the operator's)."
    )
    engine: Engine = Field("vllm", description="Metric-name preset of the serving engine.")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra label matchers (exact match) added to every query, e.g. namespace.",
    )
    window: Duration = Field(Duration("2m"), description="Range of rate() and histogram_quantile() windows.")
    queries: CustomQueries | None = Field(None, description="PromQL per signal; required when engine is custom.")

    @model_validator(mode="after")
    def _custom_needs_queries(self) -> MetricsSource:
        if self.engine == "custom" and self.queries is None:
            raise ValueError("engine 'custom' needs metrics.queries with the PromQL of every signal")
        return self


class ScaleTargetRef(ApiModel):
    """The workload scaled through its /scale subresource."""

    api_version: str = Field("apps/v1", min_length=1, description="API version, e.g. apps/v1.")
    kind: str = Field("Deployment", min_length=1, description="Kind, e.g. Deployment, StatefulSet, LeaderWorkerSet.")
    name: str = Field(min_length=1, description="Name in the pool's namespace.")


class NodeGroup(ApiModel):
    """The GPU nodes a pool runs on, selected by labels."""

    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Node labels, e.g. {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}."
    )
    gpu_resource: str = Field("nvidia.com/gpu", description="Extended resource name of a GPU.")
    allow_pending: bool = Field(
        False,
        description="Scale beyond the node group's free GPUs (a cluster autoscaler will add nodes).",
    )


class PrefillProfile(ApiModel):
    """Measured prefill service time s(ISL) = a + b·ISL + c·ISL² (seconds)."""

    a_seconds: float = Field(ge=0.0, description="Fixed time per prefill, seconds.")
    b_seconds_per_token: float = Field(ge=0.0, description="Seconds per prompt token.")
    c_seconds_per_token2: float = Field(0.0, ge=0.0, description="Seconds per squared prompt token (attention).")


class DecodeProfile(ApiModel):
    """Measured decode step time τ(n, L) = α + β·n + γ·n·L (seconds)."""

    alpha_seconds: float = Field(ge=0.0, description="Fixed time per step, seconds (weights read).")
    beta_seconds: float = Field(ge=0.0, description="Seconds per sequence in the batch.")
    gamma_seconds_per_token: float = Field(ge=0.0, description="Seconds per sequence per context token (KV read).")


class PerformanceProfile(ApiModel):
    """A measured performance profile of one replica (as written by `tokenscale fit`)."""

    prefill: PrefillProfile | None = Field(None, description="Prefill service-time coefficients.")
    decode: DecodeProfile | None = Field(None, description="Decode step-time coefficients.")
    kv_capacity_tokens: int | None = Field(None, ge=1, description="KV-cache capacity of one replica, tokens.")


class ConfigMapKeyRef(ApiModel):
    """A key in a ConfigMap in the pool's namespace."""

    name: str = Field(min_length=1, description="Name of the ConfigMap.")
    key: str = Field("profile.yaml", min_length=1, description="Key holding the profile YAML.")


class Performance(ApiModel):
    """How the planner knows a replica's speed: a profile, a ConfigMap, else the roofline prior."""

    profile: PerformanceProfile | None = Field(None, description="Inline measured profile.")
    config_map_ref: ConfigMapKeyRef | None = Field(None, description="ConfigMap holding a profile.")
    online_calibration: bool = Field(True, description="Correct the model online from observed latencies.")


class Hardware(ApiModel):
    """GPU of a pool for the roofline prior: a preset name, optionally with overrides."""

    gpu: str = Field("H100", description="GPU preset: H100, H200, B200, A100, L40S.")
    peak_tflops: float | None = Field(
        None, gt=0, alias="peakTFLOPS", description="Override: peak dense BF16 TFLOPS per GPU."
    )
    peak_fp8_tflops: float | None = Field(
        None, gt=0, alias="peakFP8TFLOPS", description="Override: peak dense FP8 TFLOPS per GPU."
    )
    interconnect_gb_per_s: float | None = Field(
        None,
        gt=0,
        alias="interconnectGBps",
        description=(
            "Override: GPU-to-GPU line rate for tensor-parallel all-reduces, GB/s each way (NVLink); "
            "all-reduces move their bytes at 0.75 of it."
        ),
    )
    hbm_gb_per_s: float | None = Field(
        None, gt=0, alias="hbmGBps", description="Override: HBM bandwidth per GPU, GB/s."
    )
    memory_gib: float | None = Field(None, gt=0, alias="memoryGiB", description="Override: GPU memory, GiB.")
    kv_transfer_gb_per_s: float | None = Field(
        None,
        gt=0,
        alias="kvTransferGBps",
        description="Override: prefill-to-decode KV transfer bandwidth per replica, GB/s.",
    )


class ModelShape(ApiModel):
    """Model shape for the roofline prior: a preset name, or every field given."""

    preset: str | None = Field(None, description="Model preset, e.g. Llama-3.1-70B. Inferred from spec.model if unset.")
    parameters_billions: float | None = Field(None, gt=0, description="Total parameters, billions.")
    active_parameters_billions: float | None = Field(
        None, gt=0, description="Parameters active per token (MoE), billions; defaults to total."
    )
    layers: int | None = Field(None, ge=1, description="Transformer layers.")
    kv_heads: int | None = Field(None, ge=1, description="Key/value heads (GQA).")
    head_dim: int | None = Field(None, ge=1, description="Dimension of one attention head.")
    precision: Precision = Field(
        "bf16",
        description="Number format the model is served in: bf16, or fp8 (FP8 weights, activations and KV cache, "
        "at the GPU's FP8 tensor-core peak). Sets bytesPerParameter and kvBytesPerValue unless they are given.",
    )
    bytes_per_parameter: float | None = Field(
        None, gt=0, description="Bytes per weight; defaults to the precision's (2 for bf16, 1 for fp8)."
    )
    kv_bytes_per_value: float | None = Field(
        None,
        gt=0,
        description="Bytes per KV-cache value; defaults to the precision's (2 for bf16, 1 for fp8). "
        "Set 2 for an fp8 model whose engine keeps a BF16 KV cache (vLLM without --kv-cache-dtype fp8).",
    )


# Bounds far above any deployment, far below where the planner's arrays (one entry per replica
# count) or int64 would overflow: a typo such as maxReplicas 1e20 is refused at admission (issue 13).
MAX_REPLICAS = 10_000
MAX_GPUS_PER_REPLICA = 1_024
MAX_BATCH_SIZE = 65_536


class WorkloadPool(ApiModel):
    """One pool of serving replicas (prefill, decode or aggregated) and its scaling bounds."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "minReplicas must be less than or equal to maxReplicas",
                }
            ]
        }
    )
    scale_target_ref: ScaleTargetRef = Field(description="The workload to scale.")
    gpus_per_replica: int = Field(
        1, ge=1, le=MAX_GPUS_PER_REPLICA, description="GPUs per replica (the tensor-parallel degree)."
    )
    min_replicas: int = Field(1, ge=0, le=MAX_REPLICAS, description="Fewest replicas.")
    max_replicas: int = Field(ge=1, le=MAX_REPLICAS, description="Most replicas.")
    max_batch_size: int = Field(
        256, ge=1, le=MAX_BATCH_SIZE, description="Most sequences a replica decodes at once (max_num_seqs)."
    )
    max_num_batched_tokens: int = Field(
        2048, ge=64, description="Tokens per engine step (chunked-prefill budget; aggregated mode)."
    )
    metrics_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Label matchers (exact match) that select this pool's engine series, e.g. {job: llama-prefill}; "
        "needed in Disaggregated mode so the prefill engines' requests are not counted as user requests.",
    )
    node_group: NodeGroup | None = Field(None, description="GPU nodes of this pool, for capacity checks.")
    hardware: Hardware | None = Field(None, description="GPU of this pool; defaults to spec.hardware.")
    performance: Performance | None = Field(None, description="Measured performance; else the roofline prior.")

    @model_validator(mode="after")
    def _min_le_max(self) -> WorkloadPool:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be less than or equal to maxReplicas ({self.max_replicas})"
            )
        return self


class Pools(ApiModel, ByRole[WorkloadPool]):
    """The pools that serve the model: prefill and decode (Disaggregated) or aggregated."""

    prefill: WorkloadPool | None = Field(None, description="Prefill pool (Disaggregated mode).")
    decode: WorkloadPool | None = Field(None, description="Decode pool (Disaggregated mode).")
    aggregated: WorkloadPool | None = Field(None, description="The single pool (Aggregated mode).")


class Forecast(ApiModel):
    """Load forecasting over the cold-start horizon."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.quantile > 0.0 && self.quantile < 1.0",
                    "message": "forecast.quantile must be strictly between 0 and 1",
                },
                {
                    "rule": "!has(self.coldStart) || duration(self.coldStart) >= duration('0s')",
                    "message": "coldStart must be a duration such as '180s'",
                },
            ]
        }
    )
    method: ForecastMethod = Field(
        "holt", description="holt (the rate's linear trend; mean lengths by their level), ewma, or none."
    )
    cold_start: Duration = Field(
        Duration("180s"),
        description="Time from scale-up to a ready replica; the forecast horizon. Measured when possible.",
    )
    quantile: float = Field(
        0.9, gt=0.0, lt=1.0, description="Plan on this upper quantile of the recent forecast error."
    )


class ScalingRules(ApiModel):
    """Stabilization and step limits for one direction."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.stabilizationWindow) || duration(self.stabilizationWindow) >= duration('0s')",
                    "message": "stabilizationWindow must be a duration such as '300s'",
                }
            ]
        }
    )
    stabilization_window: Duration | None = Field(
        None, description="Act on the extreme recommendation over this window (down: 5m, up: 0s)."
    )
    max_replicas_per_step: int | None = Field(None, ge=1, description="Most replicas added or removed at once.")
    max_gpus_per_step: int | None = Field(
        None, ge=1, alias="maxGPUsPerStep", description="Most GPUs added or removed at once."
    )


class Behavior(ApiModel):
    """HPA-like scaling behaviour."""

    scale_up: ScalingRules = Field(default_factory=ScalingRules, description="Rules when adding replicas.")
    scale_down: ScalingRules = Field(default_factory=ScalingRules, description="Rules when removing replicas.")
    tolerance: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Scale down only when the smaller pool meets the objectives with this relative margin.",
    )

    @property
    def scale_up_window_s(self) -> float:
        w = self.scale_up.stabilization_window
        return 0.0 if w is None else w.seconds

    @property
    def scale_down_window_s(self) -> float:
        w = self.scale_down.stabilization_window
        return 300.0 if w is None else w.seconds


class GatewayPoolRef(ApiModel):
    """A Gateway API Inference Extension InferencePool this pool serves (documentation only)."""

    name: str = Field(min_length=1, description="Name of the inference.networking.k8s.io InferencePool.")


_METRICS_LABELS_MESSAGE = (
    "mode Disaggregated with engine vllm, sglang or trtllm needs different, non-empty pools.prefill.metricsLabels and "
    "pools.decode.metricsLabels (e.g. {job: llama-prefill}), so that the prefill engines' series are told apart"
)


class InferencePoolSpec(ApiModel):
    """What to serve, the latency objectives, the metrics source and the pools to scale."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.mode != 'Disaggregated' || (has(self.pools.prefill) && has(self.pools.decode)"
                    " && !has(self.pools.aggregated))",
                    "message": "mode Disaggregated needs pools.prefill and pools.decode, and no pools.aggregated",
                },
                {
                    "rule": "self.mode != 'Aggregated' || (has(self.pools.aggregated) && !has(self.pools.prefill)"
                    " && !has(self.pools.decode))",
                    "message": "mode Aggregated needs pools.aggregated, and no pools.prefill or pools.decode",
                },
                {
                    "rule": "!has(self.gpuBudget) || "
                    "(has(self.pools.prefill) ? self.pools.prefill.minReplicas * self.pools.prefill.gpusPerReplica : 0)"
                    " + (has(self.pools.decode) ? self.pools.decode.minReplicas * self.pools.decode.gpusPerReplica : 0)"
                    " + (has(self.pools.aggregated) ? self.pools.aggregated.minReplicas"
                    " * self.pools.aggregated.gpusPerReplica : 0) <= self.gpuBudget",
                    "message": "gpuBudget is smaller than the GPUs the pools' minReplicas already need",
                },
                {
                    "rule": "self.mode != 'Disaggregated' || self.metrics.engine in ['dynamo', 'custom']"
                    " || !has(self.pools.prefill) || !has(self.pools.decode)"
                    " || (has(self.pools.prefill.metricsLabels) && has(self.pools.decode.metricsLabels)"
                    " && size(self.pools.prefill.metricsLabels) > 0 && size(self.pools.decode.metricsLabels) > 0"
                    " && self.pools.prefill.metricsLabels != self.pools.decode.metricsLabels)",
                    "message": _METRICS_LABELS_MESSAGE,
                },
                _positive_duration_rule("interval"),
            ]
        }
    )
    model: str = Field(min_length=1, description="Model name as it appears in the engine's metric labels.")
    mode: Mode = Field("Disaggregated", description="Disaggregated (prefill + decode pools) or Aggregated.")
    objectives: Objectives = Field(description="Latency objectives.")
    metrics: MetricsSource = Field(
        default_factory=MetricsSource, description="Where load and latency are read (default: vLLM series)."
    )
    pools: Pools = Field(description="The workloads that serve the model.")
    hardware: Hardware = Field(default_factory=Hardware, description="Default GPU of the pools (roofline prior).")
    model_shape: ModelShape | None = Field(None, description="Model shape (roofline prior); inferred from model.")
    forecast: Forecast = Field(default_factory=Forecast, description="Load forecasting.")
    behavior: Behavior = Field(default_factory=Behavior, description="Scaling behaviour.")
    gpu_budget: int | None = Field(None, ge=1, description="Most GPUs for all pools together; never exceeded.")
    interval: Duration = Field(Duration("30s"), description="How often the pool is planned.")
    dry_run: bool = Field(False, description="Advisory: compute and explain, never scale.")
    paused: bool = Field(False, description="Do nothing for this pool.")
    gateway_pool_ref: GatewayPoolRef | None = Field(None, description="The Gateway API pool this one serves.")

    @model_validator(mode="after")
    def _pools_match_mode(self) -> InferencePoolSpec:
        present = set(self.pools.by_role())
        needed = set(ROLES_BY_MODE[self.mode])
        if present != needed:
            need = " and ".join(f"pools.{r}" for r in ROLES_BY_MODE[self.mode])
            extra = sorted(present - needed)
            hint = f"; remove {', '.join('pools.' + r for r in extra)}" if extra else ""
            raise ValueError(f"mode {self.mode} needs {need}{hint}")
        if self.mode == "Disaggregated" and self.metrics.engine not in ("dynamo", "custom"):
            prefill, decode = self.pools.prefill, self.pools.decode
            if (
                prefill
                and decode
                and (
                    not prefill.metrics_labels
                    or not decode.metrics_labels
                    or prefill.metrics_labels == decode.metrics_labels
                )
            ):
                raise ValueError(_METRICS_LABELS_MESSAGE)
        if self.interval.seconds <= 0:
            raise ValueError("interval must be a positive duration such as '30s'")
        if self.gpu_budget is not None:
            floor = sum(p.min_replicas * p.gpus_per_replica for p in self.active_pools().values())
            if floor > self.gpu_budget:
                raise ValueError(
                    f"gpuBudget ({self.gpu_budget}) is smaller than the {floor} GPUs the pools' minReplicas need"
                )
        return self

    def active_pools(self) -> dict[Role, WorkloadPool]:
        """The pools this mode uses, by role, in a fixed order."""
        out: dict[Role, WorkloadPool] = {}
        for role in ROLES_BY_MODE[self.mode]:
            pool = self.pools.get(role)
            if pool is not None:
                out[role] = pool
        return out

    def hardware_of(self, role: Role) -> Hardware:
        pool = self.pools.get(role)
        if pool is not None and pool.hardware is not None:
            return pool.hardware
        return self.hardware


# ---------------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------------


class Condition(ApiModel):
    """A condition in the Kubernetes convention."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: str = Field(description="Ready, MetricsAvailable, ScalingActive, ScalingLimited or ObjectivesMet.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason.")
    message: str = Field("", description="What happened and what to do, in one sentence.")
    last_transition_time: str | None = Field(None, description="When the status last changed (RFC 3339).")


class PoolStatus(ApiModel):
    """Replicas and GPUs of one pool."""

    current_replicas: int | None = Field(None, description="Replicas as the /scale subresource says.")
    ready_replicas: int | None = Field(None, description="Ready replicas.")
    desired_replicas: int | None = Field(None, description="Replicas the planner wants.")
    gpus: int | None = Field(None, description="GPUs of the desired replicas.")
    gpu_capacity: int | None = Field(None, description="Allocatable GPUs in the node group.")
    gpus_free: int | None = Field(None, description="GPUs in the node group not yet requested.")
    last_scale_time: str | None = Field(None, description="When this pool was last scaled (RFC 3339).")
    predicted_ttft_seconds: float | None = Field(None, description="Predicted TTFT quantile at desired replicas.")
    predicted_tpot_seconds: float | None = Field(
        None, description="Predicted per-request TPOT quantile at desired replicas."
    )
    binding: str | None = Field(None, description="The constraint that set the count (ttft, tpot, kv, ...).")
    cold_start_seconds: float | None = Field(None, description="Measured time from scale-up to ready.")
    scale_up_time: str | None = Field(None, description="When the scale-up being timed was issued (RFC 3339).")
    scale_up_replicas: int | None = Field(None, description="Replicas the scale-up being timed asked for.")
    starting_seen_time: str | None = Field(
        None,
        description="The last cycle that saw fewer replicas ready than asked (RFC 3339); the TTFT tail "
        "is fitted only to a metrics window after it.",
    )
    waiting_requests: float | None = Field(
        None,
        description="Requests queued in this pool at waitingTime, the sample the next cycle reads the queue's "
        "growth against (status.observation.waitingRequests is the last cycle's total over the pools).",
    )
    waiting_time: str | None = Field(None, description="When waitingRequests was read (RFC 3339).")


class PoolStatuses(ApiModel, ByRole[PoolStatus]):
    """Status per role."""

    prefill: PoolStatus | None = Field(None, description="Prefill pool.")
    decode: PoolStatus | None = Field(None, description="Decode pool.")
    aggregated: PoolStatus | None = Field(None, description="Aggregated pool.")


class ObservationStatus(ApiModel):
    """The observation the last decision used."""

    time: str | None = Field(None, description="When it was read (RFC 3339).")
    request_rate_per_second: float | None = Field(None, description="Arrivals per second.")
    isl_mean_tokens: float | None = Field(None, description="Mean input length.")
    osl_mean_tokens: float | None = Field(None, description="Mean output length.")
    ttft_seconds: float | None = Field(None, description="Observed TTFT at the objective's quantile.")
    tpot_seconds: float | None = Field(None, description="Observed per-request TPOT at the objective's quantile.")
    waiting_requests: float | None = Field(None, description="Requests waiting, over the pools.")
    running_requests: float | None = Field(None, description="Requests running.")
    kv_usage_fraction: float | None = Field(None, description="KV-cache use, 0..1.")
    notes: list[str] = Field(default_factory=list, description="Data-quality notes (missing, stale, coarse buckets).")


class ForecastStatus(ApiModel):
    """Forecaster state, kept here so a restarted operator continues where it was."""

    request_rate_per_second: float | None = Field(None, description="Forecast rate at the horizon.")
    horizon_seconds: float | None = Field(None, description="Forecast horizon (cold start).")
    state: list[float] = Field(
        default_factory=list,
        description="Request-rate forecaster state: level, trend, time.",
    )
    isl_state: list[float] = Field(default_factory=list, description="Mean-ISL forecaster state, same layout.")
    osl_state: list[float] = Field(default_factory=list, description="Mean-OSL forecaster state, same layout.")
    work_state: list[float] = Field(
        default_factory=list,
        description="Prompt-tokens-per-second forecaster state (sets the headroom): level, trend, time, then the "
        "last hour's (time, observed, planned) triples.",
    )
    modulation_state: list[float] = Field(
        default_factory=list,
        description="The arrival rate's squared coefficient of variation across dispersion bins over the last "
        "hour, as (time, value) pairs (its median is a floor on the spread planned for).",
    )


class RecommendationRecord(ApiModel, ByRole[int]):
    """One planned recommendation, for the stabilization window."""

    time: float = Field(description="Seconds since the epoch.")
    prefill: int | None = Field(None, description="Prefill replicas.")
    decode: int | None = Field(None, description="Decode replicas.")
    aggregated: int | None = Field(None, description="Aggregated replicas.")


class FittedModel(ApiModel):
    """The online-corrected performance model of one role."""

    prefill: list[float] = Field(default_factory=list, description="Prefill calibration state.")
    decode: list[float] = Field(default_factory=list, description="Decode calibration state.")
    arrival_cv2: list[float] = Field(
        default_factory=list,
        description="Arrival burstiness fitted to the observed TTFT tail: [c_a², fit time (Unix s)].",
    )


class FittedModels(ApiModel, ByRole[FittedModel]):
    """Online-corrected performance models per role."""

    prefill: FittedModel | None = Field(None, description="Prefill pool.")
    decode: FittedModel | None = Field(None, description="Decode pool.")
    aggregated: FittedModel | None = Field(None, description="Aggregated pool.")


class DecisionStatus(ApiModel):
    """The last decision."""

    time: str | None = Field(None, description="When it was made (RFC 3339).")
    reason: str | None = Field(None, description="Why, in one line.")
    dry_run: bool = Field(False, description="Whether it was advisory only.")


class Summary(ApiModel):
    """Short strings for `kubectl get` columns."""

    ttft: str | None = Field(None, description="Observed/target TTFT, e.g. 412ms/500ms.")
    tpot: str | None = Field(None, description="Observed/target TPOT, e.g. 41ms/50ms.")
    prefill: str | None = Field(None, description="Prefill current/desired replicas.")
    decode: str | None = Field(None, description="Decode (or aggregated) current/desired replicas.")
    gpus: int | None = Field(None, description="GPUs of the desired replicas.")


class InferencePoolStatus(ApiModel):
    """What the operator observed and decided."""

    model_config = ConfigDict(extra="forbid")
    observed_generation: int | None = Field(None, description="Generation of the spec last acted on.")
    conditions: list[Condition] = Field(default_factory=list, description="Current conditions.")
    pools: PoolStatuses = Field(default_factory=PoolStatuses, description="Per-pool replicas and GPUs.")
    observation: ObservationStatus | None = Field(None, description="The observation used.")
    forecast: ForecastStatus | None = Field(None, description="The forecast and its state.")
    performance: FittedModels | None = Field(None, description="Online-corrected performance models.")
    recommendations: list[RecommendationRecord] = Field(
        default_factory=list, description="Recent recommendations (stabilization window)."
    )
    last_decision: DecisionStatus | None = Field(None, description="The last decision and its reason.")
    summary: Summary = Field(default_factory=Summary, description="Columns for kubectl get.")


class InferencePool(ApiModel):
    """An LLM inference service whose prefill/decode pools tokenscale sizes to meet latency objectives."""

    model_config = ConfigDict(extra="forbid")
    api_version: Literal["tokenscale.dev/v1alpha1"] = Field(
        "tokenscale.dev/v1alpha1", description="tokenscale.dev/v1alpha1"
    )
    kind: Literal["InferencePool"] = Field("InferencePool", description="InferencePool")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: InferencePoolSpec = Field(description="Desired behaviour.")
    status: InferencePoolStatus | None = Field(None, description="Observed state, written by the operator.")

    printer_columns: ClassVar[list[dict[str, Any]]] = [
        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
        {"name": "TTFT", "type": "string", "jsonPath": ".status.summary.ttft", "description": "observed/target"},
        {"name": "TPOT", "type": "string", "jsonPath": ".status.summary.tpot", "description": "observed/target"},
        {"name": "Prefill", "type": "string", "jsonPath": ".status.summary.prefill", "description": "current/desired"},
        {
            "name": "Decode",
            "type": "string",
            "jsonPath": ".status.summary.decode",
            "description": "current/desired (the aggregated pool in Aggregated mode)",
        },
        {"name": "GPUs", "type": "integer", "jsonPath": ".status.summary.gpus"},
        {
            "name": "Metrics",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="MetricsAvailable")].status',
            "description": "the MetricsAvailable condition: True when every signal could be read",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
