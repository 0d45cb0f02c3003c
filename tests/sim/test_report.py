"""Scoring of simulated runs and the stable summary.json shape."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tokenscale import api
from tokenscale.sim import fidelity, report

OBJ = api.Objectives.model_validate(
    {"ttft": {"quantile": 0.9, "target": "1s"}, "tpot": {"quantile": 0.9, "target": "50ms"}}
)


def _run(
    ttft: list[float], tpot: list[float], arrival: list[float] | None = None, gpu_s: float = 7200.0
) -> report.PolicyRun:
    n = len(ttft)
    t = np.arange(4) * 60.0
    return report.PolicyRun(
        policy="p",
        arrival_s=np.asarray(arrival if arrival is not None else np.linspace(0, 100, n)),
        ttft_s=np.asarray(ttft),
        tpot_s=np.asarray(tpot),
        gpu_seconds=gpu_s,
        scale_actions=3,
        timeline=report.Timeline(
            t_s=t,
            rate_per_s=np.ones(4),
            replicas={"decode": np.array([1.0, 2.0, 3.0, 2.0])},
            ready={"decode": np.array([1.0, 1.0, 2.0, 2.0])},
            ttft_q_s=np.full(4, 0.5),
            tpot_q_s=np.full(4, 0.02),
        ),
    )


@pytest.mark.parametrize(
    ("ttft", "tpot", "fraction"),
    [
        pytest.param([0.5, 0.5, 0.5, 0.5], [0.01, 0.01, 0.01, 0.01], 1.0, id="all-meet"),
        pytest.param([0.5, 2.0, 0.5, 0.5], [0.01, 0.01, 0.09, 0.01], 0.5, id="one-ttft-one-tpot-miss"),
        pytest.param([0.5, 0.5], [float("nan"), 0.01], 1.0, id="one-token-answer-has-no-tpot"),
    ],
)
def test_requests_meeting_both(ttft: list[float], tpot: list[float], fraction: float) -> None:
    assert report.score(_run(ttft, tpot), OBJ).requests_meeting_both == pytest.approx(fraction)


def test_windows_goodput_and_replicas() -> None:
    # Window 0 (t < 300 s) meets; window 1 has a p90 TTFT of 3 s.
    arrival = [10.0] * 10 + [400.0] * 10
    ttft = [0.2] * 10 + [3.0] * 10
    s = report.score(_run(ttft, [0.01] * 20, arrival, gpu_s=3600.0), OBJ)
    assert s.windows_meeting_both == pytest.approx(0.5)
    assert s.gpu_hours == pytest.approx(1.0)
    assert s.goodput_per_gpu_hour == pytest.approx(10.0)
    assert s.max_replicas == {"decode": 3} and s.mean_replicas == {"decode": 2.0}
    assert s.ttft_quantile_s == pytest.approx(3.0)


def test_write_all_produces_documented_files(tmp_path: Path) -> None:
    runs = [_run([0.5] * 5, [0.01] * 5)]
    summary = report.write_all(tmp_path, {"name": "w", "requests": 5}, OBJ, runs, "title", requests_csv=True)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    policy = on_disk["policies"]["p"]
    for key in ("requests_meeting_both", "windows_meeting_both", "gpu_hours", "goodput_per_gpu_hour",
                "scale_actions", "ttft_p90_s", "tpot_p90_s"):  # fmt: skip
        assert key in policy and not (isinstance(policy[key], float) and math.isnan(policy[key]))
    assert on_disk["objectives"]["ttft"] == {"quantile": 0.9, "target_s": 1.0}
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert "| p |" in (tmp_path / "report.md").read_text()
    assert len((tmp_path / "requests.csv").read_text().splitlines()) == 6


def _window(start_s: float, learned: bool, median_predicted_s: float) -> fidelity.WindowFidelity:
    # p90 TTFT 10% pessimistic, median against a simulated 0.5 s, TPOT and ITL exact.
    return fidelity.WindowFidelity(
        start_s=start_s, requests=100, ttft_predicted_s=1.1, ttft_open_loop_s=1.0, ttft_simulated_s=1.0,
        ttft_median_predicted_s=median_predicted_s, ttft_median_simulated_s=0.5,
        tpot_predicted_s=0.02, tpot_simulated_s=0.02, itl_predicted_s=0.01, itl_simulated_s=0.01, learned=learned,
    )  # fmt: skip


def test_the_fidelity_section_reports_the_median_ttft_beside_the_quantiles(tmp_path: Path) -> None:
    # The first window (nothing learned) is left out of the closed-loop rows: its median would be −60%.
    check = fidelity.Fidelity(
        {"decode": 2}, (_window(0.0, False, 0.2), _window(300.0, True, 0.45), _window(600.0, True, 0.4))
    )
    summary = report.write_all(tmp_path, {"name": "w"}, OBJ, [_run([0.5] * 5, [0.01] * 5)], "t", model_check=check)
    assert summary["fidelity"]["ttft_median"] == pytest.approx(
        {"median_abs_error": 0.15, "median_error": -0.15, "worst_optimistic_error": -0.2}
    )
    text = (tmp_path / "report.md").read_text()
    assert "| median TTFT (closed loop) | +15.0% | -15.0% | -20.0% |" in text
    assert "| TTFT (closed loop) | +10.0% | +10.0% | +10.0% |" in text
    assert (tmp_path / "fidelity.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("ttft_q", "tpot_q", "ttft_key", "tpot_key", "label"),
    [
        pytest.param(0.95, 0.9, "ttft_p95_s", "tpot_p90_s", "p95 TTFT", id="p95-ttft"),
        pytest.param(0.5, 0.99, "ttft_p50_s", "tpot_p99_s", "p50 TTFT", id="median-ttft-p99-tpot"),
        pytest.param(0.999, 0.9, "ttft_p99_9_s", "tpot_p90_s", "p99.9 TTFT", id="p99.9-ttft"),
    ],
)
def test_latency_labels_and_keys_follow_the_objective_quantile(
    tmp_path: Path, ttft_q: float, tpot_q: float, ttft_key: str, tpot_key: str, label: str
) -> None:
    objectives = api.Objectives.model_validate(
        {"ttft": {"quantile": ttft_q, "target": "1s"}, "tpot": {"quantile": tpot_q, "target": "50ms"}}
    )
    ttft = list(np.linspace(0.01, 1.0, 1000))  # the q-quantile of TTFT is about q seconds
    summary = report.write_all(tmp_path, {"name": "w"}, objectives, [_run(ttft, [0.01] * 1000)], "t")
    row = summary["policies"]["p"]
    assert row[ttft_key] == pytest.approx(ttft_q, abs=0.01) and tpot_key in row
    assert not [k for k in row if k.startswith(("ttft_p", "tpot_p")) and k not in (ttft_key, tpot_key)]
    assert f"{label} ms" in report.table_columns(objectives)
    text = (tmp_path / "report.md").read_text()
    assert f"| {label} ms |" in text
    if ttft_q != 0.9:
        assert "p90 TTFT" not in text


def test_report_states_the_setup_and_defines_every_column(tmp_path: Path) -> None:
    setup = {"cold_start_s": 240.0, "cold_start_jitter_s": 24.0, "decode_slower_than_prior": 0.25,
             "interval_s": 30.0, "metrics_window_s": 300.0, "score_window_s": 300.0, "seed": 7}  # fmt: skip
    report.write_all(tmp_path, {"name": "w"}, OBJ, [_run([0.5] * 5, [0.01] * 5)], "t", setup=setup)
    text = (tmp_path / "report.md").read_text()
    for phrase in ("240 s after it is requested", "25% slower than the planner's speed prior", "every 30 s",
                   "300 s window", "p90 TTFT ≤ 1000 ms", "per 5-minute window", "Seed 7"):  # fmt: skip
        assert phrase in text, phrase
    header = next(line for line in text.splitlines() if line.startswith("| policy |"))
    defined = {line.split("**")[1] for line in text.splitlines() if line.startswith("- **")}
    for column in header.strip("| ").split(" | "):
        assert column in defined or column.split(" ", 1)[1] in " ".join(defined), column
    assert "**goodput / GPU-hour**: requests meeting both objectives per GPU-hour" in text


def _policy_run(policy: str, decode: list[float], ttft_ratio: float) -> report.PolicyRun:
    """A 20-minute run: replicas per minute, TTFT at `ttft_ratio` × the 1 s target in the second window."""
    t = np.arange(20) * 60.0
    arrival = np.linspace(0, 1199, 400)
    ttft = np.where((arrival >= 300) & (arrival < 600), ttft_ratio, 0.5)
    return report.PolicyRun(
        policy=policy,
        arrival_s=arrival,
        ttft_s=ttft,
        tpot_s=np.full(400, 0.01),
        gpu_seconds=3600.0,
        scale_actions=1,
        timeline=report.Timeline(
            t_s=t,
            rate_per_s=np.ones(20),
            replicas={"prefill": np.repeat([1.0, 3.0], 10), "decode": np.asarray(decode)},
            ready={"prefill": np.repeat([1.0, 3.0], 10), "decode": np.asarray(decode)},
            ttft_q_s=np.where((t >= 300) & (t < 600), ttft_ratio, 0.5),
            tpot_q_s=np.full(20, 0.02),
        ),
    )


def test_the_plot_reads_at_a_glance() -> None:
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    runs = [_policy_run("static", [2.0] * 20, 0.8), _policy_run("hpa", [2.0] * 20, 100.0),
            _policy_run("tokenscale", [2.0] * 20, 0.9)]  # fmt: skip
    fig = report.plot_figure(runs, OBJ, "title")
    try:
        axes = fig.axes
        # Replica panels: integer ticks from 0, never 1.90-2.10 around a flat line.
        for ax in axes[1:3]:
            ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
            assert ticks[0] == 0 and all(float(t).is_integer() for t in ticks), ticks
        # A 100× miss cannot stretch the latency axis: everyone's ratio stays readable.
        ttft_ax = axes[3]
        assert ttft_ax.get_ylim()[1] <= report.RATIO_CAP * 1.1 and ttft_ax.get_yscale() == "linear"
        assert ttft_ax.get_ylabel().startswith("p90 TTFT")
        # The objective is black and dashed; no policy is black, red or green.
        objective = [line for line in ttft_ax.get_lines() if line.get_linestyle() == "--"]
        assert objective and all(mcolors.to_hex(line.get_color()) == "#000000" for line in objective)
        policy_colors = {mcolors.to_hex(line.get_color()) for ax in axes[1:3] for line in ax.get_lines()}
        assert not policy_colors & {mcolors.to_hex(c) for c in ("black", "tab:red", "tab:green")}
        # tokenscale is drawn last (on top) and thickest.
        last = axes[1].get_lines()[-1]
        assert last.get_label() == "tokenscale" and last.get_linewidth() > axes[1].get_lines()[0].get_linewidth()
        # Compliance strip: policies by row, windows by column; hpa misses window 1 only.
        grid = axes[-1].get_images()[0].get_array()
        assert grid.shape == (3, 4)
        assert grid[1].tolist() == [1.0, 0.0, 1.0, 1.0] and grid[0].tolist() == [1.0] * 4
        # The legend sits above every panel, over no data.
        fig.canvas.draw()
        legend_box = fig.legends[0].get_window_extent()
        assert legend_box.y0 >= max(ax.get_window_extent().y1 for ax in axes) - 1
    finally:
        plt.close(fig)
