"""Condition types and the CamelCase reasons the planner and the operator set.

One module so that tests, Events and status agree on the spelling (STYLE.md §13). Called by
`planner.policy`, `planner.plan`, `reconcile`, `kube/` (the reasons of failed reads and writes) and
the simulator's report.
"""

from __future__ import annotations

from typing import Final

# Condition types (DESIGN.md, "The resource").
READY: Final = "Ready"
METRICS_AVAILABLE: Final = "MetricsAvailable"
SCALING_ACTIVE: Final = "ScalingActive"
SCALING_LIMITED: Final = "ScalingLimited"
OBJECTIVES_MET: Final = "ObjectivesMet"
CONDITION_TYPES: Final = (READY, METRICS_AVAILABLE, SCALING_ACTIVE, SCALING_LIMITED, OBJECTIVES_MET)

# Reasons: why a count was chosen or held.
SCALED_UP: Final = "ScaledUp"
SCALED_DOWN: Final = "ScaledDown"
STEADY: Final = "Steady"
MIN_REPLICAS: Final = "MinReplicas"
MAX_REPLICAS: Final = "MaxReplicas"
UNREACHABLE_OBJECTIVE: Final = "ObjectiveUnreachable"
STEP_LIMITED: Final = "StepLimited"
STABILIZING: Final = "ScaleDownStabilizing"
SURVIVORS_TOO_SLOW: Final = "ScaleDownWouldMissObjectives"
HELD_FOR_RISE: Final = "ScaleDownHeldForRise"
GPU_BUDGET: Final = "GPUBudget"
NODE_GROUP_FULL: Final = "NodeGroupFull"
METRICS_MISSING: Final = "MetricsMissing"
METRICS_PARTIAL: Final = "MetricsPartial"
METRICS_OK: Final = "MetricsOK"
DRY_RUN: Final = "DryRun"
PAUSED: Final = "Paused"
OBJECTIVES_OK: Final = "ObjectivesMet"
OBJECTIVES_MISSED: Final = "ObjectivesMissed"
NO_LATENCY_DATA: Final = "NoLatencyData"

# Reasons the operator sets around the planner (spec, targets, references).
ACTIVE: Final = "Active"
INVALID_SPEC: Final = "InvalidSpec"
WOULD_SCALE: Final = "WouldScale"
SCALE_FAILED: Final = "ScaleFailed"
INVALID_PROFILE: Final = "InvalidProfile"  # a ConfigMap's key is not a PerformanceProfile

# Reasons of failed Kubernetes reads and writes (`kube.scale.KubeError.reason`).
TARGET_NOT_FOUND: Final = "TargetNotFound"
NO_SCALE_SUBRESOURCE: Final = "NoScaleSubresource"
TARGET_KIND_UNKNOWN: Final = "TargetKindUnknown"
TARGET_NOT_NAMESPACED: Final = "TargetNotNamespaced"
FORBIDDEN: Final = "Forbidden"
API_ERROR: Final = "ApiError"
INVALID_NODE_GROUP: Final = "InvalidNodeGroup"
SECRET_NOT_FOUND: Final = "SecretNotFound"
SECRET_FORBIDDEN: Final = "SecretForbidden"
SECRET_KEY_MISSING: Final = "SecretKeyMissing"
CONFIG_MAP_NOT_FOUND: Final = "ConfigMapNotFound"
CONFIG_MAP_FORBIDDEN: Final = "ConfigMapForbidden"
CONFIG_MAP_KEY_MISSING: Final = "ConfigMapKeyMissing"
