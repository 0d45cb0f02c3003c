"""Turn a pool's spec into the performance model of one replica: measured profile, else roofline prior.

Called by the CLI, the simulator and the controller before `plan()`. Precedence per pool:
an inline `performance.profile` (or the one the controller read from `configMapRef`, passed in as
`loaded_profiles`), coefficient by coefficient, over the roofline prior of the pool's GPU
(`spec.hardware` or the pool's own) and the model shape (`spec.modelShape`, or the preset whose
name appears in `spec.model`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from tokenscale.api import Hardware, InferencePoolSpec, ModelShape, PerformanceProfile, Role
from tokenscale.planner import perf, presets
from tokenscale.planner.perf import DecodeModel, PrefillModel, ReplicaPerformance


class ProfileError(ValueError):
    """The spec does not say enough to model a replica; the message says what to add."""


def gpu_of(hardware: Hardware) -> presets.GPUSpec:
    try:
        base = presets.gpu_preset(hardware.gpu)
    except presets.PresetError as err:
        raise ProfileError(str(err)) from None
    return presets.GPUSpec(
        name=base.name,
        peak_dense_tflops=hardware.peak_tflops or base.peak_dense_tflops,
        hbm_gb_per_s=hardware.hbm_gb_per_s or base.hbm_gb_per_s,
        memory_gib=hardware.memory_gib or base.memory_gib,
        kv_transfer_gb_per_s=hardware.kv_transfer_gb_per_s or base.kv_transfer_gb_per_s,
        peak_fp8_tflops=hardware.peak_fp8_tflops or base.peak_fp8_tflops,
        interconnect_gb_per_s=hardware.interconnect_gb_per_s or base.interconnect_gb_per_s,
    )


def model_shape_of(spec: InferencePoolSpec) -> presets.ModelArchitecture | None:
    """The model shape: `spec.modelShape` (preset plus overrides, or every field), else the preset
    whose name appears in `spec.model`, with `spec.modelShape.precision` and any byte counts applied."""
    shape: ModelShape | None = spec.model_shape
    base: presets.ModelArchitecture | None
    if shape is not None and shape.preset is not None:
        try:
            base = presets.model_preset(shape.preset)
        except presets.PresetError as err:
            raise ProfileError(f"spec.modelShape.preset: {err}") from None
    elif shape is not None and shape.parameters_billions is not None:
        fields = {"layers": shape.layers, "kvHeads": shape.kv_heads, "headDim": shape.head_dim}
        missing = [name for name, value in fields.items() if value is None]
        if missing:
            raise ProfileError(f"spec.modelShape needs {', '.join(missing)} when no preset is given")
        assert shape.layers and shape.kv_heads and shape.head_dim
        base = presets.ModelArchitecture(
            name="custom",
            parameters_b=shape.parameters_billions,
            active_parameters_b=shape.active_parameters_billions or shape.parameters_billions,
            layers=shape.layers,
            kv_heads=shape.kv_heads,
            head_dim=shape.head_dim,
            # Attention width: GQA models of this kind use 8 query heads per KV head (Llama-70B,
            # Qwen2.5-72B); for others, pick a preset or give a measured profile.
            hidden=shape.kv_heads * shape.head_dim * 8,
        )
    else:
        base = presets.infer_model_preset(spec.model)
        if base is None:
            if shape is not None and (shape.layers or shape.kv_heads or shape.head_dim):
                raise ProfileError("spec.modelShape needs parametersBillions when no preset is given")
            return None
    if shape is None:
        return base
    # Precision first (it sets both byte counts), then any byte count given explicitly (issue 16).
    served = presets.with_precision(base, shape.precision)
    return replace(
        served,
        parameters_b=shape.parameters_billions or base.parameters_b,
        active_parameters_b=shape.active_parameters_billions or base.active_parameters_b,
        bytes_per_parameter=shape.bytes_per_parameter or served.bytes_per_parameter,
        kv_bytes_per_value=shape.kv_bytes_per_value or served.kv_bytes_per_value,
    )


def resolve(
    spec: InferencePoolSpec, role: Role, loaded_profile: PerformanceProfile | None = None
) -> ReplicaPerformance:
    """The performance of one replica of `role`."""
    pool = spec.active_pools()[role]
    profile = loaded_profile or (pool.performance.profile if pool.performance else None)
    shape = model_shape_of(spec)
    prior: ReplicaPerformance | None = None
    if shape is not None:
        try:
            prior = perf.roofline_performance(
                gpu_of(spec.hardware_of(role)), shape, pool.gpus_per_replica, max_batch=pool.max_batch_size
            )
        except ValueError as err:
            raise ProfileError(f"pools.{role}: {err}") from None
    complete = profile is not None and profile.prefill and profile.decode and profile.kv_capacity_tokens
    if prior is None and not complete:
        raise ProfileError(
            f"pools.{role}: cannot model a replica: model {spec.model!r} matches no preset "
            f"({', '.join(presets.MODEL_PRESETS)}); set spec.modelShape or pools.{role}.performance.profile"
        )
    if profile is None:
        assert prior is not None
        return prior
    prefill = (
        PrefillModel(
            profile.prefill.a_seconds, profile.prefill.b_seconds_per_token, profile.prefill.c_seconds_per_token2
        )
        if profile.prefill
        else prior.prefill  # type: ignore[union-attr]
    )
    decode = (
        DecodeModel(profile.decode.alpha_seconds, profile.decode.beta_seconds, profile.decode.gamma_seconds_per_token)
        if profile.decode
        else prior.decode  # type: ignore[union-attr]
    )
    kv_capacity = float(profile.kv_capacity_tokens) if profile.kv_capacity_tokens else prior.kv_capacity_tokens  # type: ignore[union-attr]
    kv_bytes = prior.kv_bytes_per_token if prior else 0.0
    transfer = prior.kv_transfer_s_per_token if prior else 0.0
    return ReplicaPerformance(prefill, decode, kv_capacity, kv_bytes, pool.max_batch_size, transfer)


def resolve_all(
    spec: InferencePoolSpec, loaded_profiles: Mapping[Role, PerformanceProfile] | None = None
) -> dict[Role, ReplicaPerformance]:
    """`resolve` for every pool of the spec's mode."""
    loaded = loaded_profiles or {}
    return {role: resolve(spec, role, loaded.get(role)) for role in spec.active_pools()}


def problems(spec: InferencePoolSpec) -> list[tuple[tuple[str, ...], str]]:
    """What `resolve_all` would refuse in the operator, checked without the cluster (`tokenscale validate`):
    (the field's location from the manifest's root, message) per problem.

    A pool whose profile comes from a ConfigMap is checked for its GPU and the model shape only:
    the profile itself is read by the operator.
    """
    try:
        model_shape_of(spec)
    except ProfileError as err:
        where = ("spec", "modelShape", "preset") if spec.model_shape is not None else ("spec", "model")
        return [(where, str(err))]
    found: list[tuple[tuple[str, ...], str]] = []
    for role, pool in spec.active_pools().items():
        gpu_at = ("spec", "pools", role, "hardware", "gpu") if pool.hardware else ("spec", "hardware", "gpu")
        try:
            gpu_of(spec.hardware_of(role))
        except ProfileError as err:
            found.append((gpu_at, f"pools.{role}: {err}"))
            continue
        if pool.performance is None or pool.performance.config_map_ref is None:
            try:
                resolve(spec, role)
            except ProfileError as err:
                found.append((("spec", "pools", role), str(err)))
    return found
