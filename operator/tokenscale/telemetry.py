"""The operator's own Prometheus metrics: what it decided, what it saw, and what went wrong.

Created once by the controller's startup handler (never at import) in a private registry, served on
`--metrics-port`, and updated by `reconcile` after every cycle. Names and labels are the contract the
chart's dashboard and alerts use (charts/tokenscale/dashboards, templates/prometheusrule.yaml).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from tokenscale.planner.reasons import CONDITION_TYPES

_POOL = ("namespace", "pool")
_ROLE = ("namespace", "pool", "role")


class OperatorMetrics:
    """All operator metrics in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
        self.leader = Gauge(
            "tokenscale_leader", "1 when this replica acts (holds the Lease, or runs alone), 0 on standby.", registry=r
        )
        self.desired = Gauge("tokenscale_desired_replicas", "Replicas the planner wants.", _ROLE, registry=r)
        self.current = Gauge("tokenscale_current_replicas", "Replicas /scale reports.", _ROLE, registry=r)
        self.ready = Gauge("tokenscale_ready_replicas", "Ready replicas.", _ROLE, registry=r)
        self.gpus = Gauge("tokenscale_gpus", "GPUs of the desired replicas.", _ROLE, registry=r)
        self.predicted_ttft = Gauge(
            "tokenscale_predicted_ttft_seconds", "Predicted TTFT quantile at the desired replicas.", _POOL, registry=r
        )
        self.observed_ttft = Gauge("tokenscale_observed_ttft_seconds", "Observed TTFT quantile.", _POOL, registry=r)
        self.objective_ttft = Gauge("tokenscale_objective_ttft_seconds", "TTFT target.", _POOL, registry=r)
        self.predicted_tpot = Gauge(
            "tokenscale_predicted_tpot_seconds", "Predicted TPOT quantile at the desired replicas.", _POOL, registry=r
        )
        self.observed_tpot = Gauge("tokenscale_observed_tpot_seconds", "Observed TPOT quantile.", _POOL, registry=r)
        self.objective_tpot = Gauge("tokenscale_objective_tpot_seconds", "TPOT target.", _POOL, registry=r)
        self.rate = Gauge("tokenscale_request_rate_per_second", "Observed offered load.", _POOL, registry=r)
        self.forecast_rate = Gauge(
            "tokenscale_forecast_request_rate_per_second", "Load planned for at the horizon.", _POOL, registry=r
        )
        self.condition = Gauge(
            "tokenscale_condition", "1 for each condition's current status.", (*_POOL, "type", "status"), registry=r
        )
        self.decisions = Counter(
            "tokenscale_decisions", "Decisions by the constraint that bound them.", (*_ROLE, "binding"), registry=r
        )
        self.scaling_actions = Counter(
            "tokenscale_scaling_actions", "Writes to /scale.", (*_ROLE, "direction"), registry=r
        )
        self.query_errors = Counter(
            "tokenscale_prometheus_query_errors", "Failed Prometheus queries by kind.", (*_POOL, "reason"), registry=r
        )
        self.cycle_errors = Counter(
            "tokenscale_cycle_errors",
            "Cycles that could not decide, by reason (spec errors apart from internal errors).",
            (*_POOL, "reason"),
            registry=r,
        )
        self.planner_seconds = Histogram(
            "tokenscale_planner_duration_seconds",
            "Time in plan().",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "tokenscale_reconcile_duration_seconds",
            "One cycle: read metrics and /scale, plan, write.",
            _POOL,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )

    def set_conditions(self, namespace: str, pool: str, conditions: Iterable[tuple[str, str]]) -> None:
        """One series per (type, status) with 1 on the current status and 0 on the others."""
        current = dict(conditions)
        for ctype in CONDITION_TYPES:
            for status in ("True", "False", "Unknown"):
                value = 1.0 if current.get(ctype) == status else 0.0
                self.condition.labels(namespace, pool, ctype, status).set(value)

    def forget(self, namespace: str, pool: str) -> None:
        """Drop a deleted pool's series."""
        for metric in (
            self.desired, self.current, self.ready, self.gpus, self.predicted_ttft, self.observed_ttft,
            self.objective_ttft, self.predicted_tpot, self.observed_tpot, self.objective_tpot, self.rate,
            self.forecast_rate, self.condition, self.decisions, self.scaling_actions, self.query_errors,
            self.cycle_errors, self.reconcile_seconds,
        ):  # fmt: skip
            for labels in list(metric._metrics):  # prometheus_client keeps children by label tuple
                if labels[:2] == (namespace, pool):
                    metric.remove(*labels)
