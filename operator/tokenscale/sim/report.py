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
    ttft_quantile_s: float  # over every request, at the TTFT objective's quantile
    tpot_quantile_s: float  # at the TPOT objective's quantile
    max_replicas: Mapping[Role, int]
    mean_replicas: Mapping[Role, float]
    requests: int
    ttft_quantile: float = 0.9
    tpot_quantile: float = 0.9

    def as_json(self) -> dict[str, Any]:
        return {
            "requests_meeting_both": self.requests_meeting_both,
            "windows_meeting_both": self.windows_meeting_both,
            "gpu_hours": self.gpu_hours,
            "goodput_per_gpu_hour": self.goodput_per_gpu_hour,
            "scale_actions": self.scale_actions,
            latency_key("ttft", self.ttft_quantile): self.ttft_quantile_s,
            latency_key("tpot", self.tpot_quantile): self.tpot_quantile_s,
            "max_replicas": dict(self.max_replicas),
            "mean_replicas": dict(self.mean_replicas),
            "requests": self.requests,
        }


def quantile_label(q: float) -> str:
    """`p90`, `p95`, `p99.9`: how a quantile is named in tables and plots."""
    return f"p{round(q * 100, 6):g}"


def latency_key(signal: str, q: float) -> str:
    """The summary.json key of a latency at quantile q: `ttft_p95_s`, `tpot_p99_9_s` (the objective's own)."""
    return f"{signal}_{quantile_label(q).replace('.', '_')}_s"


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
        ttft_quantile_s=_quantile(run.ttft_s, objectives.ttft.quantile),
        tpot_quantile_s=_quantile(tpot, objectives.tpot.quantile),
        max_replicas={r: int(np.max(v)) for r, v in tl.replicas.items()},
        mean_replicas={r: float(np.mean(v)) for r, v in tl.replicas.items()},
        requests=n,
        ttft_quantile=objectives.ttft.quantile,
        tpot_quantile=objectives.tpot.quantile,
    )


def summary_json(
    workload: Mapping[str, Any],
    objectives: Objectives,
    scores: Mapping[str, PolicyScore],
    refs: Sequence[Reference] = (),
    model_check: Fidelity | None = None,
    setup: Mapping[str, Any] | None = None,
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
        "setup": dict(setup or {}),
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


def table_columns(objectives: Objectives) -> tuple[str, ...]:
    """The table's header; the latency columns are named for the objectives' own quantiles."""
    return (
        "policy",
        "requests meeting both",
        "5-min windows meeting both",
        "GPU-hours",
        "goodput / GPU-hour",
        "scale actions",
        f"{quantile_label(objectives.ttft.quantile)} TTFT ms",
        f"{quantile_label(objectives.tpot.quantile)} TPOT ms",
        "max replicas",
    )


# What every column means: report.md prints it under the table (issue 14: "goodput" was never defined).
COLUMN_DEFINITIONS = (
    ("policy", "the scaling policy replayed; a name in parentheses is a reference found by simulation, not a policy"),
    ("requests meeting both", "share of requests whose own TTFT and TPOT are both within the targets"),
    (
        "5-min windows meeting both",
        "share of 5-minute windows (by arrival time, windows with requests only) whose requests' TTFT and TPOT "
        "at the objectives' quantiles are both within the targets",
    ),
    ("GPU-hours", "replicas × GPUs per replica, integrated over the run, starting and draining replicas included"),
    (
        "goodput / GPU-hour",
        "requests meeting both objectives per GPU-hour: useful work per unit of cost (higher is better)",
    ),
    ("scale actions", "changes of any pool's requested replica count"),
    ("TTFT ms, TPOT ms", "over every request of the run, at the objective's quantile (named in the header)"),
    ("max replicas", "the most replicas requested per pool at any time (a reference: its fleet)"),
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
                _ms(s.ttft_quantile_s),
                _ms(s.tpot_quantile_s),
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
    w = summary["workload"]
    o = summary["objectives"]
    columns = [
        "policy",
        *(c for c, _ in COLUMN_DEFINITIONS[1:6]),
        f"{quantile_label(o['ttft']['quantile'])} TTFT ms",
        f"{quantile_label(o['tpot']['quantile'])} TPOT ms",
        "max replicas",
    ]
    lines = [f"# {title}", "", "## Setup", ""]
    lines += [f"- {line}" for line in setup_lines(w, summary.get("setup") or {}, o)]
    lines += ["", "## Results", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(scores, refs)]
    lines += ["", "What each column means:", ""]
    lines += [f"- **{name}**: {meaning}." for name, meaning in COLUMN_DEFINITIONS]
    lines += [
        "",
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
            "Predicted over simulated quantile − 1, per window (negative: the model is optimistic); each "
            "at the objective's quantile but the median TTFT.",
            "",
            "| quantity | median abs error | median error | most optimistic |",
            "|---|---|---|---|",
        ]
        for key, label in (
            ("ttft", "TTFT (closed loop)"),
            ("ttft_open_loop", "TTFT (open loop)"),
            ("ttft_median", "median TTFT (closed loop)"),
            ("tpot", "TPOT (per request)"),
            ("itl", "inter-token latency (per token)"),
        ):
            f = fid[key]
            lines.append(
                f"| {label} | {_signed(f['median_abs_error'])} | {_signed(f['median_error'])} | "
                f"{_signed(f['worst_optimistic_error'])} |"
            )
        before = fid["first_window"]
        if before["windows"]:
            lines.append(
                f"| TTFT in the first window (nothing learned yet) | {_signed(before['ttft']['median_abs_error'])} | "
                f"{_signed(before['ttft']['median_error'])} | {_signed(before['ttft']['worst_optimistic_error'])} |"
            )
        lines += ["", "![fidelity](fidelity.png)", ""]
    return "\n".join(lines)


def setup_lines(workload: Mapping[str, Any], setup: Mapping[str, Any], objectives: Mapping[str, Any]) -> list[str]:
    """The conditions of a run, one sentence each: what report.md states before any figure."""
    o = objectives
    out = [
        f"Workload: {workload.get('name')} ({workload.get('source')}), {workload.get('requests')} requests over "
        f"{workload.get('duration_s', 0):.0f} s (mean {workload.get('mean_rate_per_s', 0):.2f} req/s).",
        f"Objectives: {quantile_label(o['ttft']['quantile'])} TTFT ≤ {o['ttft']['target_s'] * 1000:.0f} ms and "
        f"{quantile_label(o['tpot']['quantile'])} TPOT ≤ {o['tpot']['target_s'] * 1000:.0f} ms, judged per "
        f"{setup.get('score_window_s', WINDOW_S) / 60:g}-minute window of arrivals.",
    ]
    if "cold_start_s" in setup:
        out.append(
            f"Cold start: a new replica serves {setup['cold_start_s']:g} s after it is requested "
            f"(± {setup.get('cold_start_jitter_s', 0):g} s jitter); every policy pays it."
        )
    if "decode_slower_than_prior" in setup:
        out.append(
            f"Speed error: the simulated engines decode {setup['decode_slower_than_prior']:.0%} slower than the "
            "planner's speed prior, on purpose, so the planner must correct itself online from the metrics."
        )
    if "interval_s" in setup:
        out.append(
            f"Control: tokenscale plans every {setup['interval_s']:g} s (spec.interval) from rates and latency "
            f"quantiles over a {setup.get('metrics_window_s', 0):g} s window (spec.metrics.window), at Prometheus' "
            "resolution; each baseline keeps its own loop and window (HPA 15 s, Dynamo 5 s and 180 s, llm-d 15 s)."
        )
    if "seed" in setup:
        out.append(f"Seed {setup['seed']}: the same seed replays the same requests and the same jitter.")
    return out


def _signed(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:+.1%}"


def write_requests_csv(path: Path, runs: Sequence[PolicyRun]) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["policy", "arrival_s", "ttft_s", "tpot_s"])
        for run in runs:
            for a, t1, t2 in zip(run.arrival_s.tolist(), run.ttft_s.tolist(), run.tpot_s.tolist(), strict=True):
                out.writerow([run.policy, f"{a:.6f}", f"{t1:.6f}", "" if math.isnan(t2) else f"{t2:.6f}"])


# Policy colours leave out red, green and black: red and green mark missed and met windows, black the
# objectives and the load, so neither is mistaken for a policy (issue 14).
POLICY_COLORS = ("tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:cyan", "tab:olive", "tab:gray")
RATIO_CAP = 3.0  # the latency panels show quantile/target up to 3×; a larger miss is drawn at the cap


def write_plot(path: Path, runs: Sequence[PolicyRun], objectives: Objectives, title: str) -> None:
    """plot.png: `plot_figure` saved."""
    import matplotlib.pyplot as plt

    fig = plot_figure(runs, objectives, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_figure(runs: Sequence[PolicyRun], objectives: Objectives, title: str) -> Any:
    """Load, replicas per pool, TTFT and TPOT against their objectives, and per-window compliance.

    Replica axes have integer ticks and start at 0; the latency panels plot quantile/target on a
    linear axis capped at RATIO_CAP (values above it sit on the cap with a marker), so one policy's
    large miss cannot flatten everyone else's; the objective is a black dashed line at 1; the last
    panel is one row per policy, one cell per 5-minute window, green met and red missed; the legend
    sits above the panels, clear of the data. tokenscale is drawn last and thickest, so no other
    policy hides it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.ticker import MaxNLocator

    roles = list(runs[0].timeline.replicas)
    colors = {run.policy: POLICY_COLORS[i % len(POLICY_COLORS)] for i, run in enumerate(runs)}
    order = sorted(runs, key=lambda r: r.policy == "tokenscale")  # tokenscale on top
    heights = [1.2, *([1.3] * len(roles)), 1.3, 1.3, 0.16 * len(runs) + 0.2]
    fig, axes = plt.subplots(len(heights), 1, figsize=(11, 1.9 * sum(heights) + 1.2), sharex=True,
                             gridspec_kw={"height_ratios": heights})  # fmt: skip
    first = runs[0].timeline
    axes[0].plot(first.t_s / 60, first.rate_per_s, color="black", lw=1)
    axes[0].set_ylabel("arrivals / s")
    axes[0].set_ylim(bottom=0)

    def style(run: PolicyRun) -> dict[str, Any]:
        main = run.policy == "tokenscale"
        return {"color": colors[run.policy], "lw": 2.2 if main else 1.2, "alpha": 1.0 if main else 0.85}

    for ax, role in zip(axes[1 : 1 + len(roles)], roles, strict=True):
        top = max(int(np.max(r.timeline.replicas[role])) for r in runs)
        for run in order:
            ax.step(run.timeline.t_s / 60, run.timeline.replicas[role], where="post", label=run.policy, **style(run))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=2))
        ax.set_ylim(0, top + 1)
        ax.set_ylabel(f"{role}\nreplicas")
    for ax, signal, objective in (
        (axes[1 + len(roles)], "TTFT", objectives.ttft),
        (axes[2 + len(roles)], "TPOT", objectives.tpot),
    ):
        for run in order:
            q_s = run.timeline.ttft_q_s if signal == "TTFT" else run.timeline.tpot_q_s
            ratio = q_s / objective.target.seconds
            ax.plot(run.timeline.t_s / 60, np.minimum(ratio, RATIO_CAP), **style(run))
            over = ratio > RATIO_CAP
            ax.plot(run.timeline.t_s[over] / 60, np.full(int(over.sum()), RATIO_CAP), ls="none", marker="^",
                    ms=4, color=colors[run.policy])  # fmt: skip
        ax.axhline(1.0, color="black", ls="--", lw=1.2, label="objective" if signal == "TTFT" else None)
        ax.set_ylim(0, RATIO_CAP * 1.05)
        ax.set_ylabel(f"{quantile_label(objective.quantile)} {signal}\n/ target")
    strip = axes[-1]
    end_s = max(float(r.timeline.t_s[-1]) for r in runs)
    n_windows = max(1, int(np.ceil(end_s / WINDOW_S)))
    grid = np.full((len(runs), n_windows), np.nan)
    for i, run in enumerate(runs):
        for w, met in window_flags(run.arrival_s, run.ttft_s, run.tpot_s, objectives).items():
            if w < n_windows:
                grid[i, w] = 1.0 if met else 0.0
    strip.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=ListedColormap(["tab:red", "tab:green"]), vmin=0,
                 vmax=1, extent=(0, n_windows * WINDOW_S / 60, len(runs), 0), interpolation="nearest")  # fmt: skip
    strip.vlines(np.arange(1, n_windows) * WINDOW_S / 60, 0, len(runs), color="white", lw=1.5)
    strip.hlines(np.arange(1, len(runs)), 0, n_windows * WINDOW_S / 60, color="white", lw=1.5)
    strip.set_yticks(np.arange(len(runs)) + 0.5, [r.policy for r in runs], fontsize=8)
    strip.set_ylabel("5-min windows\n(green met)")
    strip.set_xlabel("minutes")
    handles, labels = axes[1].get_legend_handles_labels()
    obj_handles, obj_labels = axes[1 + len(roles)].get_legend_handles_labels()
    height_in = fig.get_size_inches()[1]
    top = 1.0 - 0.75 / height_in  # room above the panels for the title and, under it, the legend
    fig.suptitle(title, y=1.0 - 0.12 / height_in, va="top")
    fig.legend(handles + obj_handles, labels + obj_labels, loc="upper center", ncol=len(runs) + 1, fontsize=9,
               frameon=False, bbox_to_anchor=(0.5, 1.0 - 0.38 / height_in))  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, top))
    return fig


def write_fidelity_plot(path: Path, model_check: Fidelity, title: str) -> None:
    """Predicted against simulated quantiles per window (TTFT and its median, per-request TPOT, per-token ITL)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    w = model_check.windows
    median_sim, median_pred = [x.ttft_median_simulated_s for x in w], [x.ttft_median_predicted_s for x in w]
    pairs = (
        ("TTFT", [x.ttft_simulated_s for x in w], [x.ttft_predicted_s for x in w], [x.ttft_open_loop_s for x in w]),
        ("TPOT (per request)", [x.tpot_simulated_s for x in w], [x.tpot_predicted_s for x in w], None),
        ("ITL (per token)", [x.itl_simulated_s for x in w], [x.itl_predicted_s for x in w], None),
    )
    for ax, (name, sim, pred, open_loop) in zip(axes, pairs, strict=True):
        ax.scatter(sim, pred, s=18, label="planner (closed loop)", zorder=3)
        finite = [v for v in (*sim, *pred) if math.isfinite(v)]
        if open_loop is not None:
            ax.scatter(sim, open_loop, s=14, marker="x", color="grey", label="open loop (no tail fit)")
            ax.scatter(median_sim, median_pred, s=18, marker="^", color="tab:green", label="median (closed loop)")
            finite += [v for v in (*median_sim, *median_pred) if math.isfinite(v)]
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
    setup: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write summary.json, report.md, plot.png, fidelity.png (and requests.csv) into out_dir; return the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = {run.policy: score(run, objectives) for run in runs}
    summary = summary_json(workload, objectives, scores, refs, model_check, setup)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "report.md").write_text(report_markdown(summary, scores, title, refs))
    write_plot(out_dir / "plot.png", runs, objectives, title)
    if model_check is not None and model_check.windows:
        write_fidelity_plot(out_dir / "fidelity.png", model_check, title)
    if requests_csv:
        write_requests_csv(out_dir / "requests.csv", runs)
    return summary
