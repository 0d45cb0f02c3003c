"""Condition types and the CamelCase reasons the planner and the operator set, as enums.

One module so that tests, Events and status agree on the spelling (STYLE.md §13). Called by
`planner.policy`, `planner.plan`, `reconcile`, `kube/` (the reasons of failed reads and writes) and
the simulator's report. Both enums are `StrEnum`s: a member is its string wherever a string is
taken (pydantic fields, Event reasons, metric labels); `wire` is the one place a member (or a
`sizing.Binding`) becomes the plain string written out where no such conversion happens (YAML).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class ConditionType(StrEnum):
    """The status conditions (DESIGN.md, "The resource"), in the order status lists them."""

    READY = "Ready"
    METRICS_AVAILABLE = "MetricsAvailable"
    SCALING_ACTIVE = "ScalingActive"
    SCALING_LIMITED = "ScalingLimited"
    OBJECTIVES_MET = "ObjectivesMet"


# The order status and the operator's `tokenscale_condition` metric list the conditions in.
CONDITION_TYPES: Final = tuple(ConditionType)


class Reason(StrEnum):
    """Why a count was chosen or held, what the operator found around the planner, and why a
    Kubernetes read or write failed (`kube.scale.KubeError.reason`)."""

    # Why a count was chosen or held (the planner).
    SCALED_UP = "ScaledUp"
    SCALED_DOWN = "ScaledDown"
    STEADY = "Steady"
    MIN_REPLICAS = "MinReplicas"
    MAX_REPLICAS = "MaxReplicas"
    UNREACHABLE_OBJECTIVE = "ObjectiveUnreachable"
    STEP_LIMITED = "StepLimited"
    STABILIZING = "ScaleDownStabilizing"
    SURVIVORS_TOO_SLOW = "ScaleDownWouldMissObjectives"
    HELD_FOR_RISE = "ScaleDownHeldForRise"
    BACKLOG = "BacklogDraining"
    GPU_BUDGET = "GPUBudget"
    NODE_GROUP_FULL = "NodeGroupFull"
    METRICS_MISSING = "MetricsMissing"
    METRICS_PARTIAL = "MetricsPartial"
    METRICS_OK = "MetricsOK"
    DRY_RUN = "DryRun"
    PAUSED = "Paused"
    OBJECTIVES_OK = "ObjectivesMet"
    OBJECTIVES_MISSED = "ObjectivesMissed"
    NO_LATENCY_DATA = "NoLatencyData"

    # What the operator finds around the planner (spec, targets, references).
    ACTIVE = "Active"
    INVALID_SPEC = "InvalidSpec"
    WOULD_SCALE = "WouldScale"
    SCALE_FAILED = "ScaleFailed"
    INVALID_PROFILE = "InvalidProfile"  # a ConfigMap's key is not a PerformanceProfile

    # Failed Kubernetes reads and writes.
    TARGET_NOT_FOUND = "TargetNotFound"
    NO_SCALE_SUBRESOURCE = "NoScaleSubresource"
    TARGET_KIND_UNKNOWN = "TargetKindUnknown"
    TARGET_NOT_NAMESPACED = "TargetNotNamespaced"
    FORBIDDEN = "Forbidden"
    API_ERROR = "ApiError"
    INVALID_NODE_GROUP = "InvalidNodeGroup"
    SECRET_NOT_FOUND = "SecretNotFound"
    SECRET_FORBIDDEN = "SecretForbidden"
    SECRET_KEY_MISSING = "SecretKeyMissing"
    CONFIG_MAP_NOT_FOUND = "ConfigMapNotFound"
    CONFIG_MAP_FORBIDDEN = "ConfigMapForbidden"
    CONFIG_MAP_KEY_MISSING = "ConfigMapKeyMissing"


def wire(value: StrEnum) -> str:
    """A condition type, reason or `sizing.Binding` as status, `plan -o json|yaml` and the report spell it."""
    return value.value
