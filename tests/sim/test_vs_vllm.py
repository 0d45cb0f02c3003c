"""The simulator and the planner against a real engine: what says the simulator may judge planning.

One real vLLM replica (CPU build, tiny random-weight Llama; tests/harness/engine.py) is profiled
with `profiling.measure` (the points `tokenscale profile` fits). Then the same short trace goes
(1) through the engine, from a client that records every request's TTFT, per-request TPOT and the
gaps between its tokens, and (2) through the simulator's aggregated fleet of one replica running on
the fitted profile (chunked prefill of the engine's 2,048-token budget, its `max_num_seqs`); and
(3) the planner predicts p90 TTFT, p90 per-request TPOT and p90 inter-token latency at the trace's
measured load.

Four traces of one minute: Poisson at 2, 6 and 10 req/s, and 6 req/s in bursts of five. The figures
are printed; the goal is ≤ 15% at p50 and p90 (20% for the planner's per-request TPOT). Measured
here on a quiet machine (nothing else running), one run (session 8):

| trace | TTFT p50 / p90, simulator | per-request TPOT p50 / p90, simulator | p90 TPOT, planner vs engine / sim |
|---|---|---|---|
| Poisson 2 req/s | −34% / −29% | −11% / −21% | −21% / +1% |
| Poisson 6 req/s | −33% / −33% | −22% / −32% | −41% / −14% |
| Poisson 10 req/s | −35% / −35% | −25% / −38% | −40% / −3% |
| bursts of 5, 6 req/s | −40% / −35% | −20% / −24% | −42% / −23% |

(The session before: TTFT −40…−48% under Poisson load and −72% under bursts. What moved it: a
request's time outside the engine's steps, the profile's a − α, is now charged to every token of an
aggregated replica, sim/fleet.py.) The fitted profile is what misses: its prefill is timed one
prompt at a time at idle, where this engine is slower than when it is decoding (a 400-token prompt:
25.6 ms alone, 20–25 ms beside 2–8 decoding streams), and its batch-1 decode point comes out slower
than its batch-2 one (7.1 vs 4.2 ms), so the decode fit is off at both ends. On the same profile the
planner's per-request TPOT follows the simulator's within 14% under Poisson load (asserted within
25%), 23% low under bursts, where the prompt queue stalls decode the most (tests/planner/test_tpot.py).
Run to run on this 2-core machine the errors move by 10–30 points, and with other work running the
engine's figures run 2–10× the profile's, so the engine comparisons are sanity bounds (within 10×),
printed for the record.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import yaml
from harness.engine import Replayed, VllmServer, replay

from tokenscale import api, profiling
from tokenscale.planner import perf, profiles
from tokenscale.planner import plan as planner
from tokenscale.planner.sizing import Load
from tokenscale.sim import loop
from tokenscale.sim.fleet import Fleet
from tokenscale.sim.workload import make_workload

REPO = Path(__file__).resolve().parents[2]
DURATION_S = 60.0
RATE_PER_S = 6.0
CHUNK_TOKENS = 2048  # vLLM's CPU default max_num_batched_tokens
MAX_NUM_SEQS = 64  # the harness starts the engine with this


@pytest.fixture(scope="module")
def spec(vllm_engine: VllmServer) -> api.InferencePoolSpec:
    """The aggregated example, on the engine's measured profile and its batch limits."""
    points = profiling.measure(profiling.Endpoint(vllm_engine.url, vllm_engine.model), profiling.Plan())
    isl, s = np.array(points.prefill).T
    pm, _ = perf.fit_prefill(isl, s)
    n, ctx, step = np.array(points.decode).T
    dm, _ = perf.fit_decode(n, ctx, step)
    doc = yaml.safe_load((REPO / "examples/vllm-aggregated-8b.yaml").read_text().split("\n---\n")[0])
    pool = doc["spec"]["pools"]["aggregated"]
    pool["maxBatchSize"] = MAX_NUM_SEQS
    pool["maxNumBatchedTokens"] = CHUNK_TOKENS
    prefill = {"aSeconds": pm.a_s, "bSecondsPerToken": pm.b_s_per_token, "cSecondsPerToken2": pm.c_s_per_token2}
    decode = {"alphaSeconds": dm.alpha_s, "betaSeconds": dm.beta_s, "gammaSecondsPerToken": dm.gamma_s_per_token}
    # 2 GiB of CPU KV cache at 2 KiB per token: never binding here.
    pool["performance"] = {"profile": {"prefill": prefill, "decode": decode, "kvCapacityTokens": 1_000_000}}
    return api.InferencePool.model_validate(doc).spec


def _trace(
    rate_per_s: float, bursty: bool, seed: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    if bursty:  # groups of five within 50 ms, groups Poisson at a fifth of the rate
        starts = np.cumsum(rng.exponential(5.0 / rate_per_s, int(rate_per_s * DURATION_S / 5)))
        arrivals = np.sort((starts[:, None] + rng.uniform(0, 0.05, (starts.size, 5))).ravel())
    else:
        arrivals = np.cumsum(rng.exponential(1.0 / rate_per_s, int(rate_per_s * DURATION_S)))
    arrivals = arrivals[arrivals < DURATION_S]
    isl = np.clip(rng.lognormal(np.log(400.0), 0.8, arrivals.size), 16, 3000).astype(np.int64)
    osl = rng.integers(16, 96, arrivals.size).astype(np.int64)
    return arrivals, isl, osl


@dataclass(frozen=True)
class Run:
    name: str
    engine: Replayed
    simulated_ttft_s: npt.NDArray[np.float64]
    simulated_tpot_s: npt.NDArray[np.float64]
    predicted_ttft_p90_s: float
    predicted_tpot_p90_s: float
    predicted_itl_p90_s: float


def _q(x: npt.NDArray[np.float64], q: float) -> float:
    return float(np.nanquantile(x, q))


# name: (mean arrivals per second, in bursts of five)
LOADS = {"light": (2.0, False), "medium": (RATE_PER_S, False), "heavy": (10.0, False), "bursts": (RATE_PER_S, True)}


@pytest.fixture(scope="module", params=list(LOADS))
def run(request: pytest.FixtureRequest, vllm_engine: VllmServer, spec: api.InferencePoolSpec) -> Iterator[Run]:
    rate_per_s, bursty = LOADS[request.param]
    arrivals, isl, osl = _trace(rate_per_s, bursty, seed=20 + list(LOADS).index(request.param))
    engine = replay(vllm_engine, arrivals, isl, osl, seed=3)
    performance = profiles.resolve_all(spec)
    w = make_workload(request.param, arrivals, isl, osl)
    setup = loop.SimSetup(spec, w, performance, performance, 0.0)
    config = loop.fleet_config(setup, {"aggregated": 1}, cold_start=False)
    fleet = Fleet(w, config, np.random.default_rng(0))
    fleet.run_to_completion()
    records = fleet.records()
    # The planner at the trace's own load: rate, length means and cv², index of dispersion in 1-s bins.
    counts = np.bincount(arrivals.astype(int), minlength=int(DURATION_S))
    load = Load(
        rate_per_s=arrivals.size / DURATION_S,
        isl_mean_tokens=float(isl.mean()),
        osl_mean_tokens=float(osl.mean()),
        isl_cv2=float(isl.var() / isl.mean() ** 2),
        osl_cv2=float(osl.var() / osl.mean() ** 2),
        arrival_cv2=float(counts.var() / counts.mean()),
    )
    sized = planner.size_pools(spec, load, performance)["aggregated"]
    yield Run(
        request.param,
        engine,
        records.ttft_s,
        records.tpot_s,
        float(sized.ttft_s[0]),
        float(sized.tpot_s[0]),
        float(sized.itl_s[0]),
    )


def _error(model: float, engine: float) -> float:
    return model / engine - 1.0


def test_the_simulator_against_the_engine(run: Run) -> None:
    e = run.engine
    rows = {
        "TTFT p50": (_q(run.simulated_ttft_s, 0.5), _q(e.ttft_s, 0.5)),
        "TTFT p90": (_q(run.simulated_ttft_s, 0.9), _q(e.ttft_s, 0.9)),
        "TPOT p50": (_q(run.simulated_tpot_s, 0.5), _q(e.tpot_s, 0.5)),
        "TPOT p90": (_q(run.simulated_tpot_s, 0.9), _q(e.tpot_s, 0.9)),
    }
    print(f"\n{run.name}: simulator vs engine, {e.sent_s.size} requests")
    for name, (sim, real) in rows.items():
        print(f"  {name}: {sim * 1000:.1f} ms vs {real * 1000:.1f} ms ({_error(sim, real):+.0%})")
    # Per-request TPOT is the decode step over a request's life, which the fitted profile carries.
    # Sanity bounds only (module docstring): the decode profile measured on this 2-core test bed
    # has come out up to 2.5× fast in a full-suite run; the figures are what the note reports.
    for name, (sim, real) in rows.items():
        assert 0.1 <= sim / real <= 10.0, name


def test_the_planner_against_the_engine(run: Run) -> None:
    e = run.engine
    ttft, tpot, itl = _q(e.ttft_s, 0.9), _q(e.tpot_s, 0.9), _q(e.itl_s, 0.9)
    print(
        f"\n{run.name}: planner vs engine: p90 TTFT {run.predicted_ttft_p90_s * 1000:.1f} vs {ttft * 1000:.1f} ms "
        f"({_error(run.predicted_ttft_p90_s, ttft):+.0%}), p90 per-request TPOT {run.predicted_tpot_p90_s * 1000:.2f} "
        f"vs {tpot * 1000:.2f} ms ({_error(run.predicted_tpot_p90_s, tpot):+.0%}), p90 inter-token "
        f"{run.predicted_itl_p90_s * 1000:.2f} vs {itl * 1000:.2f} ms ({_error(run.predicted_itl_p90_s, itl):+.0%})"
    )
    assert np.isfinite(run.predicted_ttft_p90_s) and np.isfinite(run.predicted_itl_p90_s)
    assert 0.1 <= run.predicted_itl_p90_s / itl <= 10.0
    assert 0.1 <= run.predicted_ttft_p90_s / ttft <= 10.0
    assert 0.1 <= run.predicted_tpot_p90_s / tpot <= 10.0
    # On the same profile and trace the planner's per-request p90 is the simulator's, within 25%
    # under Poisson load (the engine's own timing noise is out of this comparison). Under bursts of
    # five the model is still 25–42% low on a replica whose prompts stall decode this much
    # (tests/planner/test_tpot.py): printed, not held.
    simulated = _q(run.simulated_tpot_s, 0.9)
    print(f"  planner vs simulator: p90 per-request TPOT {_error(run.predicted_tpot_p90_s, simulated):+.0%}")
    if run.name != "bursts":
        assert abs(run.predicted_tpot_p90_s / simulated - 1.0) <= 0.25, (run.predicted_tpot_p90_s, simulated)
