"""How far the planner's model is from the simulated fleet, window by window, on any workload.

Called by `tokenscale simulate` (the `fidelity` block of summary.json and the predicted-vs-simulated
plot) and by `bench/bench_quality.py`. Method: replay the workload through a fixed fleet (the counts
given, no cold start, the fleet's true performance); for every 5-minute window build the
`Observation` the operator would read over that window (Prometheus-resolution counters and vLLM
histograms, `loop.observe`) and ask the model for its p-quantile TTFT and TPOT at the fleet's counts;
compare with the quantiles of the requests that arrived in the window (the score's definition: TPOT
per request, (finish − first token)/(OSL − 1)). The median TTFT is compared beside the objective's
quantile (the model sized at q = 0.5, same load and fit): a model right at one quantile by luck
of its shape is wrong at the other. The per-token inter-token latency is compared too: the
model's step-time quantile against the fleet's ITL histogram over the window, kept for this replay at
1% resolution (`histogram.FINE_LATENCY_BUCKETS_S`) rather than vLLM's 10–25 ms buckets.

The model is judged as the planner runs it: slow rate variation from the window's own 15-s counts
(what Prometheus shows), and the closed-loop tail fit (`planner.tail`) learned from the windows
before, never from the window being predicted. The open-loop prediction (Poisson within the bins,
no fit) is reported beside it. The model is given the fleet's true
performance, so the figures measure the queueing model, not the speed prior.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from tokenscale.api import InferencePoolSpec, Role, prompt_role, serving_role
from tokenscale.planner import plan as planner
from tokenscale.sim import loop
from tokenscale.sim.fleet import Fleet
from tokenscale.sim.histogram import FINE_LATENCY_BUCKETS_S
from tokenscale.sim.report import WINDOW_S

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class WindowFidelity:
    """One window: the model's quantiles (closed and open loop) and the simulated ones, in seconds."""

    start_s: float
    requests: int
    ttft_predicted_s: float
    ttft_open_loop_s: float
    ttft_simulated_s: float
    ttft_median_predicted_s: float
    ttft_median_simulated_s: float
    tpot_predicted_s: float
    tpot_simulated_s: float
    itl_predicted_s: float
    itl_simulated_s: float
    learned: bool  # the closed loop had earlier windows to learn from (fit or, where they agree with it, the prior)

    @property
    def ttft_error(self) -> float:
        return _error(self.ttft_predicted_s, self.ttft_simulated_s)

    @property
    def ttft_open_loop_error(self) -> float:
        return _error(self.ttft_open_loop_s, self.ttft_simulated_s)

    @property
    def ttft_median_error(self) -> float:
        return _error(self.ttft_median_predicted_s, self.ttft_median_simulated_s)

    @property
    def tpot_error(self) -> float:
        return _error(self.tpot_predicted_s, self.tpot_simulated_s)

    @property
    def itl_error(self) -> float:
        return _error(self.itl_predicted_s, self.itl_simulated_s)


@dataclass(frozen=True)
class Fidelity:
    """Per-window comparison at a fixed fleet, and its summary."""

    counts: Mapping[Role, int]
    windows: tuple[WindowFidelity, ...]

    def summary(self) -> dict[str, Any]:
        """Median |error| and the most optimistic error (most negative) per quantity; errors are
        predicted/simulated − 1, over windows whose simulated quantile is finite. The closed-loop
        figures cover the windows predicted after the closed loop had seen another (with the c_a² it
        fitted, or the Poisson prior where the windows did not contradict it); the replay's first
        window, predicted before any (the operator fits on its first cycle, the replay has no earlier
        window), is reported apart as `first_window`."""

        def stats(errors: list[float]) -> dict[str, float | None]:
            e = np.array([x for x in errors if math.isfinite(x)])
            if e.size == 0:
                return {"median_abs_error": None, "worst_optimistic_error": None, "median_error": None}
            return {
                "median_abs_error": float(np.median(np.abs(e))),
                "median_error": float(np.median(e)),
                "worst_optimistic_error": float(e.min()),
            }

        learned = [w for w in self.windows if w.learned]
        return {
            "counts": dict(self.counts),
            "windows": len(self.windows),
            "ttft": stats([w.ttft_error for w in learned]),
            "ttft_open_loop": stats([w.ttft_open_loop_error for w in self.windows]),
            "ttft_median": stats([w.ttft_median_error for w in learned]),
            "tpot": stats([w.tpot_error for w in self.windows]),
            "itl": stats([w.itl_error for w in self.windows]),
            "first_window": {
                "windows": len(self.windows) - len(learned),
                "ttft": stats([w.ttft_error for w in self.windows if not w.learned]),
            },  # fmt: skip
        }


def _error(predicted: float, simulated: float) -> float:
    if not (math.isfinite(simulated) and simulated > 0):
        return math.nan
    if not math.isfinite(predicted):
        return math.inf
    return predicted / simulated - 1.0


def measure(setup: loop.SimSetup, counts: Mapping[Role, int]) -> Fidelity:
    """Replay `setup.workload` through a fixed fleet of `counts` and compare the model per window."""
    spec, w = setup.spec, setup.workload
    roles = tuple(spec.active_pools())
    rng = np.random.default_rng(setup.seed)
    config = replace(loop.fleet_config(setup, dict(counts), cold_start=False), itl_buckets_s=FINE_LATENCY_BUCKETS_S)
    fleet = Fleet(w, config, rng)
    edges = np.arange(0.0, w.duration_s, WINDOW_S)
    snaps = [fleet.snapshot(float(t)) for t in [*edges, w.duration_s]]
    fleet.run_to_completion()
    records = fleet.records()
    ttft, tpot = records.ttft_s, np.where(np.isnan(records.tpot_s), 0.0, records.tpot_s)
    q_ttft, q_tpot = spec.objectives.ttft.quantile, spec.objectives.tpot.quantile
    median_spec = _with_ttft_quantile(spec, 0.5)
    state = planner.PlannerState()
    out: list[WindowFidelity] = []
    for before, after in zip(snaps[:-1], snaps[1:], strict=True):
        if after.time_s - before.time_s < WINDOW_S / 2:
            continue  # a short tail window has too few requests to judge a quantile
        observation = loop.observe(spec, before, after, w.arrival_s, roles).observation
        sel = (records.arrival_s >= before.time_s) & (records.arrival_s < after.time_s)
        closed = planner.observed_load(spec, observation, state)
        opened = planner.observed_load(spec, observation)
        if closed is None or opened is None or not sel.any():
            continue
        at = {r: int(counts[r]) - 1 for r in roles}
        closed_sized = planner.size_pools(spec, closed, setup.truth)
        open_sized = planner.size_pools(spec, opened, setup.truth)
        median_sized = planner.size_pools(median_spec, closed, setup.truth)
        ttft_role, tpot_role = prompt_role(spec.mode), serving_role(spec.mode)
        out.append(
            WindowFidelity(
                start_s=before.time_s,
                requests=int(sel.sum()),
                ttft_predicted_s=float(closed_sized[ttft_role].ttft_s[at[ttft_role]]),
                ttft_open_loop_s=float(open_sized[ttft_role].ttft_s[at[ttft_role]]),
                ttft_simulated_s=float(np.quantile(ttft[sel], q_ttft)),
                ttft_median_predicted_s=float(median_sized[ttft_role].ttft_s[at[ttft_role]]),
                ttft_median_simulated_s=float(np.median(ttft[sel])),
                tpot_predicted_s=float(closed_sized[tpot_role].tpot_s[at[tpot_role]]),
                tpot_simulated_s=float(np.quantile(tpot[sel], q_tpot)),
                itl_predicted_s=float(closed_sized[tpot_role].itl_s[at[tpot_role]]),
                itl_simulated_s=after.itl_s.minus(before.itl_s).quantile(q_tpot),
                learned=bool(out),  # an earlier window went through the closed loop below
            )
        )
        # Learn from this window for the next one, as the operator does between intervals.
        state = planner.fit_tail(spec, observation, state, setup.truth, after.time_s)
    return Fidelity(dict(counts), tuple(out))


def _with_ttft_quantile(spec: InferencePoolSpec, quantile: float) -> InferencePoolSpec:
    """`spec` with its TTFT objective read at `quantile` (the target unchanged)."""
    objectives = spec.objectives
    ttft = objectives.ttft.model_copy(update={"quantile": quantile})
    return spec.model_copy(update={"objectives": objectives.model_copy(update={"ttft": ttft})})
