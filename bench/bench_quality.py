"""Planning-quality benchmark: every policy against the simulated references, on real and built-in workloads.

One command writes docs/benchmarks.md (per scenario: windows and requests meeting both objectives,
GPU-hours and their ratio to best-static and clairvoyant, the model's fidelity) and one Pareto plot
per scenario (windows meeting both vs GPU-hours). Each scenario is one `tokenscale simulate` run;
the built-in scenarios (diurnal, a ×5 step, on/off bursts, heavy-tailed prompts) are drawn seeded
and replayed as traces.

The traces are the named public ones (`--trace azure-conv-2023`, `--trace mooncake-synthetic`),
fetched once into the user cache by `tokenscale simulate` and checked against their sha256: the
Azure LLM inference trace 2023, conversation (Patel et al., "Splitwise", ISCA 2024) and the Mooncake
synthetic trace (Qin et al., "Mooncake", FAST 2025), the latter with a long-context pool. Offline,
copy the published files into ~/.cache/tokenscale/traces/ under their published names.

The README's main job, the built-in workload, is also redrawn over twenty seeds (`across_seeds`).

    .venv/bin/python bench/bench_quality.py [--out docs]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tokenscale.sim import workload

ROOT = Path(__file__).resolve().parents[1]
CONVERSATION = ROOT / "bench" / "pools" / "conversation-70b.yaml"
LONG_CONTEXT = ROOT / "bench" / "pools" / "long-context-70b.yaml"


def built_in_traces(directory: Path) -> dict[str, Path]:
    """The built-in scenarios as plain `t_s,isl,osl` traces (seeded): what `simulate --trace` replays."""
    rng = np.random.default_rng(7)
    quiet = workload.synthetic_workload(rng, 1200.0, 4.0, shape="constant")
    loud = workload.synthetic_workload(rng, 1200.0, 20.0, shape="constant")
    after = workload.synthetic_workload(rng, 1200.0, 4.0, shape="constant")
    step = workload.make_workload(
        "step",
        np.concatenate((quiet.arrival_s, loud.arrival_s + 1200.0, after.arrival_s + 2400.0)),
        np.concatenate((quiet.isl_tokens, loud.isl_tokens, after.isl_tokens)),
        np.concatenate((quiet.osl_tokens, loud.osl_tokens, after.osl_tokens)),
        shift_to_zero=False,
    )
    scenarios = {
        "diurnal ×3 (1 h)": workload.synthetic_workload(rng, 3600.0, 4.0, shape="diurnal", peak_to_base=3.0),
        "a ×5 step for 20 minutes": step,
        "on/off bursts ×4 (30 s every ~2 min)": workload.synthetic_workload(
            rng, 3600.0, 3.0, shape="constant", bursts=workload.Bursts(4.0, 120.0, 30.0)
        ),
        "heavy-tailed prompts (ISL c = 3)": workload.synthetic_workload(
            rng, 3600.0, 4.0, shape="constant", isl=workload.LengthDistribution(2000.0, 3.0, 16, 32768)
        ),
    }
    out = {}
    for i, (name, w) in enumerate(scenarios.items()):
        path = directory / f"built-in-{i}.csv"
        rows = "\n".join(f"{t:.3f},{a},{b}" for t, a, b in zip(w.arrival_s, w.isl_tokens, w.osl_tokens, strict=True))
        path.write_text("t_s,isl,osl\n" + rows + "\n")
        out[name] = path
    return out


SCENARIOS: tuple[tuple[str, Path, list[str]], ...] = (
    ("azure-2023-conv ×1", CONVERSATION, ["--trace", "azure-conv-2023"]),
    ("azure-2023-conv ×3", CONVERSATION, ["--trace", "azure-conv-2023", "--rate-scale", "3"]),
    ("azure-2023-conv ×5", CONVERSATION, ["--trace", "azure-conv-2023", "--rate-scale", "5"]),
    ("mooncake-synthetic (long context)", LONG_CONTEXT, ["--trace", "mooncake-synthetic"]),
    ("built-in synthetic (ramp with bursts)", ROOT / "examples" / "vllm-disaggregated-70b.yaml", []),
)


SEEDS = range(20)  # the built-in workload redrawn: a result that holds on one draw only does not count


def run(pool: Path, args: list[str], out: Path, seed: int = 7) -> tuple[dict[str, object], float]:
    start = time.perf_counter()
    cmd = [
        sys.executable,
        "-m",
        "tokenscale.cli",
        "simulate",
        "-f",
        str(pool),
        "--seed",
        str(seed),
        "--out-dir",
        str(out),
        *args,
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads((out / "summary.json").read_text()), time.perf_counter() - start


def across_seeds(scratch: Path) -> list[str]:
    """The README's main job (the built-in workload) redrawn with each of `SEEDS`: per policy the mean
    and worst share of windows met, GPU-hours against each draw's best-static fleet, and on how many
    draws another policy met at least as many windows with fewer GPU-hours than tokenscale."""
    pool = ROOT / "examples" / "vllm-disaggregated-70b.yaml"
    start = time.perf_counter()
    runs = [run(pool, [], scratch / f"seed-{seed}", seed)[0] for seed in SEEDS]
    rows: dict[str, list[tuple[float, float]]] = {}
    dominated = 0
    for summary in runs:
        policies = summary["policies"]
        assert isinstance(policies, dict)
        for name, row in policies.items():
            rows.setdefault(name, []).append((row["windows_meeting_both"], row["gpu_hours_vs_best_static"]))
        ours = policies["tokenscale"]
        dominated += any(
            row["windows_meeting_both"] >= ours["windows_meeting_both"] and row["gpu_hours"] < ours["gpu_hours"]
            for n, row in policies.items()
            if n != "tokenscale"
        )
    lines = [
        f"## The built-in workload over seeds {SEEDS.start}–{SEEDS.stop - 1}",
        "",
        f"`tokenscale simulate -f {pool.relative_to(ROOT)} --seed N` (the README's main job is seed 0): the",
        f"ramp and its bursts redrawn, each draw with its own best-static fleet; {time.perf_counter() - start:.0f} s.",
        "",
        "| policy | windows meeting both: mean | worst | GPU-hours ÷ best-static: mean | worst |",
        "|---|---|---|---|---|",
    ]
    for name, values in rows.items():
        windows, ratios = np.array(values).T
        lines.append(
            f"| {name} | {_pct(windows.mean())} | {_pct(windows.min())} | {_ratio(ratios.mean())} | "
            f"{_ratio(ratios.max())} |"
        )
    lines += [
        "",
        f"tokenscale is dominated (another policy meets as many windows with fewer GPU-hours) on "
        f"{dominated} of {len(runs)} draws.",
        "",
    ]
    return lines


def _pct(x: object) -> str:
    return "-" if not isinstance(x, int | float) else f"{x:.1%}"


def _ratio(x: object) -> str:
    return "-" if not isinstance(x, int | float) else f"{x:.2f}×"


def pareto_plot(path: Path, title: str, summary: dict[str, object]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    policies = summary["policies"]
    assert isinstance(policies, dict)
    for name, row in policies.items():
        ax.scatter(row["gpu_hours"], row["windows_meeting_both"] * 100, s=40, label=name, zorder=3)
    refs = summary["references"]
    assert isinstance(refs, dict)
    for name, ref in refs.items():
        ax.scatter(ref["gpu_hours"], ref["windows_meeting_both"] * 100, marker="*", s=120, label=f"({name})", zorder=3)
    ax.set_xlabel("GPU-hours")
    ax.set_ylabel("5-minute windows meeting both (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs"), help="directory for benchmarks.md and plots")
    args = parser.parse_args()
    out = Path(args.out)
    (out / "benchmarks").mkdir(parents=True, exist_ok=True)
    lines = [
        "# Planning-quality benchmark",
        "",
        "Written by `bench/bench_quality.py` (seed 7; cold start 240 s ± 10%; the simulated decode is 25% slower",
        "than the planner's prior). References are searched with the simulator, never the planner's model:",
        "`best-static` is the smallest constant fleet meeting both objectives in ≥ 99% of 5-minute windows;",
        "`clairvoyant` is, per window, the fewest GPUs meeting it with no cold start; `clairvoyant-late` asks",
        "for those counts as each window starts and waits the cold start: a window it misses cannot be met by",
        "sizing for the load as it comes (a rise faster than the cold start). Fidelity: the planner's",
        "p90 predictions at the best-static fleet against the simulated p90 (and the median TTFT against the",
        "simulated median), per window (negative = optimistic).",
        "",
        'Traces: Azure LLM inference trace 2023, conversation (Patel et al., "Splitwise: Efficient generative',
        'LLM inference using phase splitting", ISCA 2024); Mooncake synthetic (Qin et al., "Mooncake: Trading',
        'More Storage for Less Computation", FAST 2025), with a long-context pool (p90 TTFT ≤ 8 s).',
        "",
    ]
    scratch = Path(tempfile.mkdtemp(prefix="tokenscale-quality-"))
    built_in = [(name, CONVERSATION, ["--trace", str(path)]) for name, path in built_in_traces(scratch).items()]
    for i, (name, pool, extra) in enumerate([*SCENARIOS, *built_in]):
        summary, wall_s = run(pool, extra, scratch / f"run-{i}")
        policies = summary["policies"]
        refs = summary["references"]
        fid = summary["fidelity"]
        assert isinstance(policies, dict) and isinstance(refs, dict) and isinstance(fid, dict)
        lines += [
            f"## {name}",
            "",
            f"Pool `{pool.relative_to(ROOT)}`; one `simulate` run ({len(policies)} policies and both "
            f"references): {wall_s:.0f} s.",
            "",
            "| policy | windows meeting both | requests meeting both | GPU-hours | ÷ best-static | ÷ clairvoyant |",
            "|---|---|---|---|---|---|",
        ]
        for pname, row in policies.items():
            lines.append(
                f"| {pname} | {_pct(row['windows_meeting_both'])} | {_pct(row['requests_meeting_both'])} | "
                f"{row['gpu_hours']:.1f} | {_ratio(row['gpu_hours_vs_best_static'])} | "
                f"{_ratio(row['gpu_hours_vs_clairvoyant'])} |"
            )
        for rname, ref in refs.items():
            lines.append(f"| ({rname}) | {_pct(ref['windows_meeting_both'])} | | {ref['gpu_hours']:.1f} | | |")
        ours = policies["tokenscale"]
        beaten_by = [
            n
            for n, row in policies.items()
            if n != "tokenscale"
            and row["windows_meeting_both"] >= ours["windows_meeting_both"]
            and row["gpu_hours"] < ours["gpu_hours"]
        ]
        lines += [
            "",
            f"tokenscale: {_pct(ours['windows_meeting_both'])} of windows at "
            f"{_ratio(ours['gpu_hours_vs_best_static'])} best-static and "
            f"{_ratio(ours['gpu_hours_vs_clairvoyant'])} clairvoyant GPU-hours; "
            + (
                f"dominated by {', '.join(beaten_by)}."
                if beaten_by
                else "no baseline meets as many windows with fewer."
            )
            + (
                f" Asked for as each window starts, the clairvoyant fleet meets "
                f"{_pct(refs['clairvoyant-late']['windows_meeting_both'])} of windows through the cold start."
                if ours["windows_meeting_both"] < 0.99
                else ""
            ),
        ]
        plot = out / "benchmarks" / f"pareto-{i}.png"
        pareto_plot(plot, name, summary)
        ttft, tpot, itl, open_loop = fid["ttft"], fid["tpot"], fid["itl"], fid["ttft_open_loop"]
        median = fid["ttft_median"]
        before = fid["first_window"]
        lines += [
            "",
            f"Fidelity at {fid['counts']} over {fid['windows']} windows: p90 TTFT median |error| "
            f"{_pct(ttft['median_abs_error'])}, most optimistic {_pct(ttft['worst_optimistic_error'])} "
            f"(first window, nothing learned yet: {_pct(before['ttft']['worst_optimistic_error'])}; "
            f"open loop: {_pct(open_loop['median_abs_error'])}, {_pct(open_loop['worst_optimistic_error'])}); "
            f"median TTFT {_pct(median['median_abs_error'])}, {_pct(median['worst_optimistic_error'])}; "
            f"p90 TPOT (per request) {_pct(tpot['median_abs_error'])}, {_pct(tpot['worst_optimistic_error'])}; "
            f"p90 inter-token latency (per token) {_pct(itl['median_abs_error'])}, "
            f"{_pct(itl['worst_optimistic_error'])}.",
            "",
            f"![{name}](benchmarks/{plot.name})",
            "",
        ]
        print(f"{name}: {wall_s:.0f} s", flush=True)
    lines += across_seeds(scratch)
    (out / "benchmarks.md").write_text("\n".join(lines))
    print(f"wrote {out / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
