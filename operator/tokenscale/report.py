"""Render a planning Decision for people (a plain-text table) and for programs (a stable JSON shape).

Called by the CLI (`tokenscale plan`). The JSON shape is documented in README.md and kept stable:

    {"prefill": {"replicas", "current_replicas", "gpus", "predicted": {"ttft_s"}, "binding", "reason",
                 "message"},
     "decode":  {... "predicted": {"tpot_s"} ...}  (or "aggregated": {... both ...}),
     "gpus": int, "reason": str, "held": bool,
     "planned_load": {"rate_per_s", "isl_mean_tokens", "osl_mean_tokens", "horizon_s"} | null,
     "conditions": [{"type", "status", "reason", "message"}]}
"""

from __future__ import annotations

from typing import Any

from tokenscale.api import InferencePoolSpec
from tokenscale.planner.observation import Observation
from tokenscale.planner.plan import Decision
from tokenscale.planner.reasons import wire
from tokenscale.tables import Table


def decision_json(decision: Decision) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for role, d in decision.pools.items():
        predicted: dict[str, float | None] = {}
        if role in ("prefill", "aggregated"):
            predicted["ttft_s"] = d.predicted_ttft_s
        if role in ("decode", "aggregated"):
            predicted["tpot_s"] = d.predicted_tpot_s
            predicted["kv_usage_fraction"] = d.kv_usage_fraction
        out[role] = {
            "replicas": d.desired_replicas,
            "current_replicas": d.current_replicas,
            "gpus": d.gpus,
            "predicted": predicted,
            "binding": wire(d.binding),
            "reason": wire(d.reason),
            "message": d.message,
        }
    out["gpus"] = decision.total_gpus
    out["reason"] = decision.reason
    out["held"] = decision.held
    planned = decision.planned
    out["planned_load"] = (
        None
        if planned is None
        else {
            "rate_per_s": planned.load.rate_per_s,
            "isl_mean_tokens": planned.load.isl_mean_tokens,
            "osl_mean_tokens": planned.load.osl_mean_tokens,
            "horizon_s": planned.horizon_s,
        }
    )
    out["conditions"] = [
        {"type": wire(c.type), "status": c.status, "reason": wire(c.reason), "message": c.message}
        for c in decision.conditions
    ]
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def decision_table(name: str, spec: InferencePoolSpec, decision: Decision) -> Table:
    obj = spec.objectives
    title = (
        f"{name}: {spec.mode}, p{obj.ttft.quantile * 100:g} TTFT ≤ {_ms(obj.ttft.target.seconds)}, "
        f"p{obj.tpot.quantile * 100:g} TPOT ≤ {_ms(obj.tpot.target.seconds)}"
    )
    columns = ("pool", "replicas", "GPUs", "pred. TTFT", "pred. TPOT", "KV", "binds", "reason")
    table = Table(columns, title=title, caption=decision.reason)
    for role, d in decision.pools.items():
        kv = "-" if d.kv_usage_fraction is None else f"{d.kv_usage_fraction:.0%}"
        replicas = f"{d.current_replicas} → {d.desired_replicas}" if d.changed else str(d.current_replicas)
        table.add_row(role, replicas, str(d.gpus), _ms(d.predicted_ttft_s), _ms(d.predicted_tpot_s), kv,
                      wire(d.binding), wire(d.reason))  # fmt: skip
    if decision.planned is not None:
        load = decision.planned.load
        table.add_section()
        table.add_row(
            "load",
            f"{load.rate_per_s:.3g} req/s",
            "",
            f"ISL {load.isl_mean_tokens:.0f}",
            f"OSL {load.osl_mean_tokens:.0f}",
            "",
            "",
            f"horizon {decision.planned.horizon_s:g}s",
        )
    return table


def observation_table(title: str, observation: Observation) -> Table:
    """The signals read (or why not): what `plan --prometheus` shows before the decision."""
    table = Table(("signal", "value", "data quality"), title=title)
    notes: dict[str, list[str]] = {}
    for note in observation.notes:
        notes.setdefault(note.signal, []).append(f"{note.kind}: {note.message}")

    def num(value: float | None, unit: str = "", digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}g}{unit}"

    rows = (
        ("request_rate", num(observation.request_rate_per_s, " req/s")),
        ("isl_mean", num(observation.isl_mean_tokens, " tokens", 4)),
        ("osl_mean", num(observation.osl_mean_tokens, " tokens", 4)),
        ("arrival_cv2", num(observation.arrival_cv2)),
        ("ttft_quantile", _ms(observation.ttft_quantile_s)),
        ("tpot_quantile", _ms(observation.tpot_quantile_s)),
        ("waiting", num(sum(observation.waiting_requests.values()) if observation.waiting_requests else None)),
        ("kv_usage", "-" if observation.kv_usage_fraction is None else f"{observation.kv_usage_fraction:.0%}"),
    )
    for signal, value in rows:
        table.add_row(signal, value, "; ".join(notes.pop(signal, [])))
    for role, counts in observation.replicas.items():
        table.add_row(f"replicas {role}", f"{counts.current} ({counts.ready} ready)", "")
    for signal, messages in notes.items():
        table.add_row(signal, "", "; ".join(messages))
    return table
