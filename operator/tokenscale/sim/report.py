"""Score simulated runs and write the report: summary.json, report.md, plot.png, optional per-request CSV.

Called by `tokenscale simulate` after every policy has replayed the same workload. A request
"meets both" when its TTFT and its TPOT are within the targets; a 5-minute window "meets both"
when the objective quantiles of the requests that arrived in it are within the targets (windows
with no request are not counted). Goodput is requests meeting both per GPU-hour.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tokenscale.api import Objectives, Role

if TYPE_CHECKING:
    from tokenscale.sim.fidelity import Fidelity
    from tokenscale.sim.references import Reference

FloatArray = npt.NDArray[np.float64]
WINDOW_S = 300.0


@dataclass(frozen=True)
class Timeline:
    """What the controller saw and did, one row per control interval."""

    t_s: FloatArray
    rate_per_s: FloatArray
    replicas: Mapping[Role, FloatArray]  # requested (ready + starting) replicas
    ready: Mapping[Role, FloatArray]
    ttft_q_s: FloatArray  # observed objective quantile over the last interval (nan when none)
    tpot_q_s: FloatArray


@dataclass(frozen=True)
class PolicyRun:
    """One policy's replay: per-request outcomes, the timeline, GPU use and scaling actions."""

    policy: str
    arrival_s: FloatArray
    ttft_s: FloatArray
    tpot_s: FloatArray
    gpu_seconds: float
    scale_actions: int
    timeline: Timeline
    wall_s: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class PolicyScore:
    """The figures of one policy, as they appear in summary.json."""

    requests_meeting_both: float
    windows_meeting_both: float
    gpu_hours: float
    goodput_per_gpu_hour: float
    scale_actions: int
    ttft_p90_s: float
    tpot_p90_s: float
    max_replicas: Mapping[Role, int]
    mean_replicas: Mapping[Role, float]
    requests: int

    def as_json(self) -> dict[str, Any]:
        return {
            "requests_meeting_both": self.requests_meeting_both,
            "windows_meeting_both": self.windows_meeting_both,
            "gpu_hours": self.gpu_hours,
            "goodput_per_gpu_hour": self.goodput_per_gpu_hour,
            "scale_actions": self.scale_actions,
            "ttft_p90_s": self.ttft_p90_s,
            "tpot_p90_s": self.tpot_p90_s,
            "max_replicas": dict(self.max_replicas),
            "mean_replicas": dict(self.mean_replicas),
            "requests": self.requests,
        }


def _quantile(values: FloatArray, q: float) -> float:
    finite = values[np.isfinite(values)]
    return float(np.quantile(finite, q)) if finite.size else math.nan


def window_flags(
    arrival_s: FloatArray, ttft_s: FloatArray, tpot_s: FloatArray, objectives: Objectives
) -> dict[int, bool]:
    """For each 5-minute window holding requests: whether its requests' objective quantiles meet both targets."""
    ttft_t, tpot_t = objectives.ttft.target.seconds, objectives.tpot.target.seconds
    # A one-token answer has no TPOT; it meets the TPOT objective trivially.
    tpot = np.where(np.isnan(tpot_s), 0.0, tpot_s)
    windows = np.floor(arrival_s / WINDOW_S).astype(np.int64)
    out: dict[int, bool] = {}
    for w in np.unique(windows):
        sel = windows == w
        ttft_q = _quantile(ttft_s[sel], objectives.ttft.quantile)
        tpot_q = _quantile(tpot[sel], objectives.tpot.quantile)
        out[int(w)] = bool(ttft_q <= ttft_t and tpot_q <= tpot_t)
    return out


def score(run: PolicyRun, objectives: Objectives) -> PolicyScore:
    """Objective attainment, GPU-hours and goodput of one run."""
    ttft_t, tpot_t = objectives.ttft.target.seconds, objectives.tpot.target.seconds
    # A one-token answer has no TPOT; it meets the TPOT objective trivially.
    tpot = np.where(np.isnan(run.tpot_s), 0.0, run.tpot_s)
    good = (run.ttft_s <= ttft_t) & (tpot <= tpot_t)
    n = int(run.arrival_s.size)
    flags = window_flags(run.arrival_s, run.ttft_s, run.tpot_s, objectives)
    met, counted = sum(flags.values()), len(flags)
    gpu_hours = run.gpu_seconds / 3600.0
    tl = run.timeline
    return PolicyScore(
        requests_meeting_both=float(good.mean()) if n else math.nan,
        windows_meeting_both=met / counted if counted else math.nan,
        gpu_hours=gpu_hours,
        goodput_per_gpu_hour=float(good.sum()) / gpu_hours if gpu_hours > 0 else math.nan,
        scale_actions=run.scale_actions,
        ttft_p90_s=_quantile(run.ttft_s, 0.9),
        tpot_p90_s=_quantile(tpot, 0.9),
        max_replicas={r: int(np.max(v)) for r, v in tl.replicas.items()},
        mean_replicas={r: float(np.mean(v)) for r, v in tl.replicas.items()},
        requests=n,
    )


def summary_json(
    workload: Mapping[str, Any],
    objectives: Objectives,
    scores: Mapping[str, PolicyScore],
    refs: Sequence[Reference] = (),
    model_check: Fidelity | None = None,
) -> dict[str, Any]:
    """The stable shape of summary.json (README.md documents it)."""
    by_name = {r.name: r for r in refs}
    policies: dict[str, Any] = {}
    for name, s in scores.items():
        row = s.as_json()
        for ref_name, ref in by_name.items():
            key = f"gpu_hours_vs_{ref_name.replace('-', '_')}"
            row[key] = s.gpu_hours / ref.gpu_hours if ref.gpu_hours > 0 else None
        policies[name] = row
    return {
        "workload": dict(workload),
        "objectives": {
            "ttft": {"quantile": objectives.ttft.quantile, "target_s": objectives.ttft.target.seconds},
            "tpot": {"quantile": objectives.tpot.quantile, "target_s": objectives.tpot.target.seconds},
        },
        "policies": policies,
        "references": {r.name: r.as_json() for r in refs},
        "fidelity": model_check.summary() if model_check is not None else None,
    }


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1%}"


def _ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x * 1000:.0f}"


TABLE_COLUMNS = (
    "policy",
    "requests meeting both",
    "5-min windows meeting both",
    "GPU-hours",
    "goodput / GPU-hour",
    "scale actions",
    "p90 TTFT ms",
    "p90 TPOT ms",
    "max replicas",
)


def table_rows(scores: Mapping[str, PolicyScore], refs: Sequence[Reference] = ()) -> list[list[str]]:
    rows = []
    for name, s in scores.items():
        rows.append(
            [
                name,
                _pct(s.requests_meeting_both),
                _pct(s.windows_meeting_both),
                f"{s.gpu_hours:.1f}",
                f"{s.goodput_per_gpu_hour:.0f}",
                str(s.scale_actions),
                _ms(s.ttft_p90_s),
                _ms(s.tpot_p90_s),
                " + ".join(f"{v} {r}" for r, v in s.max_replicas.items()),
            ]
        )
    for ref in refs:
        fleet = " + ".join(f"{v} {r}" for r, v in ref.counts[0].items()) if len(ref.counts) == 1 else "per window"
        rows.append(
            [f"({ref.name})", "-", _pct(ref.windows_meeting_both), f"{ref.gpu_hours:.1f}", "-", "-", "-", "-", fleet]
        )
    return rows


def report_markdown(
    summary: Mapping[str, Any], scores: Mapping[str, PolicyScore], title: str, refs: Sequence[Reference] = ()
) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(scores, refs)]
    w = summary["workload"]
    o = summary["objectives"]
    lines += [
        "",
        f"Workload: {w.get('name')} — {w.get('requests')} requests over {w.get('duration_s', 0):.0f} s "
        f"(mean {w.get('mean_rate_per_s', 0):.2f} req/s).",
        f"Objectives: p{o['ttft']['quantile'] * 100:g} TTFT ≤ {o['ttft']['target_s'] * 1000:.0f} ms, "
        f"p{o['tpot']['quantile'] * 100:g} TPOT ≤ {o['tpot']['target_s'] * 1000:.0f} ms.",
        "A request meets both when its TTFT and TPOT are within the targets; a 5-minute window when the",
        "objective quantiles of the requests arriving in it are. Goodput is requests meeting both per GPU-hour.",
        "The references are found by searching fleets with the simulator (never with the planner's model):",
        "`best-static` is the smallest constant fleet meeting both in ≥ 99% of windows; `clairvoyant` is, per",
        "window, the fewest GPUs meeting it, with no cold start (no deployable policy reaches it).",
        "",
        "![plot](plot.png)",
        "",
    ]
    fid = summary.get("fidelity")
    if fid:
        lines += [
            f"## Model fidelity at the best-static fleet ({fid['windows']} windows)",
            "",
            "Predicted over simulated quantile − 1, per window (negative: the model is optimistic).",
            "",
            "| quantity | median abs error | median error | most optimistic |",
            "|---|---|---|---|",
        ]
        for key, label in (
            ("ttft", "TTFT (closed loop)"),
            ("ttft_open_loop", "TTFT (open loop)"),
            ("tpot", "TPOT (per request)"),
            ("itl", "inter-token latency (per token)"),
        ):
            f = fid[key]
            lines.append(
                f"| {label} | {_signed(f['median_abs_error'])} | {_signed(f['median_error'])} | "
                f"{_signed(f['worst_optimistic_error'])} |"
            )
        before = fid["before_fit"]
        if before["windows"]:
            lines.append(
                f"| TTFT before any fit ({before['windows']} window) | {_signed(before['ttft']['median_abs_error'])} | "
                f"{_signed(before['ttft']['median_error'])} | {_signed(before['ttft']['worst_optimistic_error'])} |"
            )
        lines += ["", "![fidelity](fidelity.png)", ""]
    return "\n".join(lines)


def _signed(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:+.1%}"


def write_requests_csv(path: Path, runs: Sequence[PolicyRun]) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["policy", "arrival_s", "ttft_s", "tpot_s"])
        for run in runs:
            for a, t1, t2 in zip(run.arrival_s.tolist(), run.ttft_s.tolist(), run.tpot_s.tolist(), strict=True):
                out.writerow([run.policy, f"{a:.6f}", f"{t1:.6f}", "" if math.isnan(t2) else f"{t2:.6f}"])


def write_plot(path: Path, runs: Sequence[PolicyRun], objectives: Objectives, title: str) -> None:
    """Load, replicas per pool per policy, and TTFT/TPOT quantiles against their targets, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roles = list(runs[0].timeline.replicas)
    fig, axes = plt.subplots(2 + len(roles), 1, figsize=(11, 2.4 * (2 + len(roles)) + 1), sharex=True)
    first = runs[0].timeline
    axes[0].plot(first.t_s / 60, first.rate_per_s, color="black", lw=1)
    axes[0].set_ylabel("arrivals / s")
    axes[0].set_title(title)
    for run in runs:
        tl = run.timeline
        for ax, role in zip(axes[1 : 1 + len(roles)], roles, strict=True):
            ax.step(tl.t_s / 60, tl.replicas[role], where="post", label=run.policy, lw=1.2)
            ax.set_ylabel(f"{role} replicas")
    axes[1].legend(loc="upper left", ncol=len(runs), fontsize=8)
    lat = axes[-1]
    for run in runs:
        line = lat.plot(run.timeline.t_s / 60, run.timeline.ttft_q_s / objectives.ttft.target.seconds, lw=1)[0]
        lat.plot(
            run.timeline.t_s / 60,
            run.timeline.tpot_q_s / objectives.tpot.target.seconds,
            lw=1,
            ls="--",
            color=line.get_color(),
        )
    lat.axhline(1.0, color="red", lw=1)
    lat.set_yscale("log")
    lat.set_ylabel("quantile / target\n(— TTFT, -- TPOT)")
    lat.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_fidelity_plot(path: Path, model_check: Fidelity, title: str) -> None:
    """Predicted against simulated p-quantiles per window (TTFT, per-request TPOT, per-token ITL), with y = x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    w = model_check.windows
    pairs = (
        ("TTFT", [x.ttft_simulated_s for x in w], [x.ttft_predicted_s for x in w], [x.ttft_open_loop_s for x in w]),
        ("TPOT (per request)", [x.tpot_simulated_s for x in w], [x.tpot_predicted_s for x in w], None),
        ("ITL (per token)", [x.itl_simulated_s for x in w], [x.itl_predicted_s for x in w], None),
    )
    for ax, (name, sim, pred, open_loop) in zip(axes, pairs, strict=True):
        ax.scatter(sim, pred, s=18, label="planner (closed loop)", zorder=3)
        if open_loop is not None:
            ax.scatter(sim, open_loop, s=14, marker="x", color="grey", label="open loop (no tail fit)")
        finite = [v for v in (*sim, *pred) if math.isfinite(v)]
        if finite:
            lo, hi = min(finite) * 0.8, max(finite) * 1.2
            ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
            ax.fill_between(
                [lo, hi], [lo * 0.8, hi * 0.8], [lo, hi], color="tab:red", alpha=0.08, label="≤ 20% optimistic"
            )
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi * 1.5)
        ax.set_xlabel(f"simulated {name} quantile (s)")
        ax.set_ylabel(f"predicted {name} quantile (s)")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{title}: model vs simulated fleet, per 5-minute window")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(
    out_dir: Path,
    workload: Mapping[str, Any],
    objectives: Objectives,
    runs: Sequence[PolicyRun],
    title: str,
    refs: Sequence[Reference] = (),
    model_check: Fidelity | None = None,
    requests_csv: bool = False,
) -> dict[str, Any]:
    """Write summary.json, report.md, plot.png, fidelity.png (and requests.csv) into out_dir; return the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = {run.policy: score(run, objectives) for run in runs}
    summary = summary_json(workload, objectives, scores, refs, model_check)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "report.md").write_text(report_markdown(summary, scores, title, refs))
    write_plot(out_dir / "plot.png", runs, objectives, title)
    if model_check is not None and model_check.windows:
        write_fidelity_plot(out_dir / "fidelity.png", model_check, title)
    if requests_csv:
        write_requests_csv(out_dir / "requests.csv", runs)
    return summary
