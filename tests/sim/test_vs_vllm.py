"""The simulator and the planner against a real engine: what says the simulator may judge planning.

One real vLLM replica (CPU build, tiny random-weight Llama; tests/harness/engine.py) is profiled
with `profiling.measure` (the points `tokenscale profile` fits). Then the same short trace goes
(1) through the engine, from a client that records every request's TTFT, per-request TPOT and the
gaps between its tokens, and (2) through the simulator's aggregated fleet of one replica running on
the fitted profile (chunked prefill of the engine's 2,048-token budget, its `max_num_seqs`); and
(3) the planner predicts p90 TTFT, p90 per-request TPOT and p90 inter-token latency at the trace's
measured load.

Four traces of one minute: Poisson at 2, 6 and 10 req/s, and 6 req/s in bursts of five. The figures
are printed; the goal is ≤ 15% at p50 and p90 (20% for the planner's per-request TPOT). Simulator
vs engine (client-side TTFT and per-request TPOT), and the planner's p90 per-request TPOT vs the
engine's; each a single run with the session's profile:

| trace | TTFT p50 / p90 | TPOT p50 / p90 | planner p90 TPOT | session 8: TTFT, TPOT, planner |
|---|---|---|---|---|
| Poisson 2 req/s | −26% / −18% | −6% / −49% | −49% | −34/−29%, −11/−21%, −21% |
| Poisson 6 req/s | −6% / −10% | −8% / −12% | −23% | −33/−33%, −22/−32%, −41% |
| Poisson 10 req/s | −10% / −7% | −20% / −25% | −28% | −35/−35%, −25/−38%, −40% |
| bursts of 5, 6 req/s | −32% / −35% | −26% / −24% | −43% | −40/−35%, −20/−24%, −42% |

(Session 9, 2026-12-07, load average 1.8–2.5 with the engine's own two processes and nothing else
running; session 8's on a quiet machine.) A second run minutes later, load 1.0–3.2: medium −1/+3%,
−4/−10%, planner −20%; heavy −1/−6%, −7/−11%, −14%; bursts −26/−17%, −17/−21%, −39%; light −43/−89%,
−4/−41%, −40%, its TTFT p90 a 277 ms client stall (vLLM's own mean TTFT 21.8 ms, the client's 89.5).
What moved them is the profile (tokenscale/profiling.py): its decode points were the gaps between
streamed chunks, and vLLM's API server delivers a stream's tokens in bursts (a whole 64-token stream
within 1 ms after a 250 ms first token), so points read as low as 0.01 ms per step and the decode
fit had R² 0.35; from the streams' ends at two output lengths it has R² 0.96. Its repeats are now
spread over the whole grid, and every shape runs once untimed first.

Where a TTFT goes is printed in means from vLLM's own histograms (client; vLLM's TTFT from its API
server's arrival; the engine core's queue + prefill), beside the simulator's TTFT and its part in
the replica's steps. In the first run the simulator's time in steps is within 0–10% of the engine core's
queue + prefill at medium, heavy and bursty load (light −22%), and the client adds 2–5 ms to vLLM's
mean TTFT. With simulations running beside it (load average 4–8), the same tests saw the
client add 8–40 ms to vLLM's mean TTFT, and vLLM's own mean TPOT 17–52% above the simulator's on a
profile taken a minute earlier (TTFT −40…−89%, TPOT −13…−56%): on this 2-core machine the engine
core, the API server, the client and other work share one core, and the engine's speed moves by ±40%
from one minute to the next. So the engine comparisons hold only bounds: every quantile within 10×,
and the simulator's means against vLLM's own (time in steps against queue + prefill, per-request
TPOT) within 4× (seen 0.55–1.1 alone, 0.36–0.40 in a full-suite run). The TTFT quantiles are held
against vLLM's own TTFT, read from its histogram's buckets as Prometheus reads them (the series the
operator plans from), not the client's, which carries the client's stalls: with a second test suite
running beside these tests, the client's p90 TTFT at light load was 333 ms and vLLM's 40 ms (the
simulator's 32 ms). Both are printed.

Session 10, after the per-request TPOT model counted the prompts that stall a request as members of
its batch (tests/planner/test_tpot.py): the planner's p90 per-request TPOT is within −1%…+5% of the
simulator's on all four traces (it was 25% below under bursts), and against the engine +17% (light),
+58% (medium), +2% (heavy), −4% (bursts). In that run the engine ran faster than its profile of a
few minutes before: the simulator itself, on that profile, was +11%, +61%, −3% and −7% at p90 TPOT
and +20…+58% at p90 TTFT. What is short is the profile's hold on a CPU engine whose speed moves
from minute to minute, not the planner's model of the fleet the profile describes.

Session 13 (2026-12-07): five runs of the engine tests alone on a quiet machine (the client's p90 TTFT
against the simulator's from run 1 to 5; vLLM's own from its buckets in runs 4 and 5):

| trace | p90 TTFT, client | p90 TTFT, vLLM's | p90 TPOT | planner's p90 per-request TPOT |
|---|---|---|---|---|
| Poisson 2 req/s | −27, −20, −8, −4, −5% | −8, −13% | +2, −7, −10, −5, −6% | +8, −4, −5, −1, −2% |
| Poisson 6 req/s | −25, −19, −23, −0, −18% | +13, −2% | −2, +2, −16, −3, −6% | −7, −8, −21, −11, −11% |
| Poisson 10 req/s | −44, −21, −4, +4, −19% | +15, −13% | −8, −3, −10, −9, −12% | −2, +0, −1, −0, −5% |
| bursts of 5 | −15, −14, −54, −4, −11% | −4, −2% | −0, +3, −17, −1, −5% | −2, −6, −15, +1, −3% |

The p50s (runs 1, 4 and 5) were within −15%…+11%, but TTFT −26% under bursts in run 1. Run 4 met
15% on all sixteen of the simulator's figures. The rest is the engine's spread from run to run (its
client-side p90 TTFT under heavy load was 81, 58, 52 and 49 ms in runs 1–4, the simulator's
45–52 ms), which the client's and the API server's time outside the engine core carries: 6 ms of
the mean TTFT at light load, 12 ms at medium, 15–19 ms under heavy load and bursts in run 1, where
the simulator charges a fixed 5 ms outside the replica's steps. The planner's −21% in run 3 was 6% below
the simulator on the same profile, and the simulator 16% below the engine: the engine ran slower
than its profile of a few minutes before.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import yaml
from harness.engine import Replayed, VllmServer, replay
from prometheus_client.parser import text_string_to_metric_families

from tokenscale import api, profiling
from tokenscale.planner import perf, profiles
from tokenscale.planner import plan as planner
from tokenscale.planner.sizing import Load
from tokenscale.sim import loop
from tokenscale.sim.fleet import Fleet
from tokenscale.sim.histogram import TTFT_BUCKETS_S, HistogramSnapshot
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


# vLLM's own per-request histograms whose means (sum / count over the replay) split a TTFT: its
# `time_to_first_token` runs from the API server's arrival to the first token's output, `queue_time`
# from the engine core's queue to the first schedule, `prefill_time` from there to the first token.
ENGINE_MEANS = {
    "ttft_s": "vllm:time_to_first_token_seconds",
    "queue_s": "vllm:request_queue_time_seconds",
    "prefill_s": "vllm:request_prefill_time_seconds",
    "tpot_s": "vllm:request_time_per_output_token_seconds",
}


def _sums(server: VllmServer) -> tuple[dict[str, tuple[float, float]], HistogramSnapshot]:
    """(sum, count) of each of `ENGINE_MEANS`' histograms, over the engine's labels; and its TTFT
    histogram's cumulative buckets."""
    out = {key: (0.0, 0.0) for key in ENGINE_MEANS}
    names = {name: key for key, name in ENGINE_MEANS.items()}
    buckets = np.zeros(len(TTFT_BUCKETS_S) + 1)
    for family in text_string_to_metric_families(server.metrics_text()):
        key = names.get(family.name)
        if key is None:
            continue
        for sample in family.samples:
            total, count = out[key]
            if sample.name == family.name + "_sum":
                out[key] = (total + sample.value, count)
            elif sample.name == family.name + "_count":
                out[key] = (total, count + sample.value)
            elif sample.name == family.name + "_bucket" and key == "ttft_s":
                le = float(sample.labels["le"])
                buckets[len(TTFT_BUCKETS_S) if math.isinf(le) else TTFT_BUCKETS_S.index(le)] += sample.value
    total, count = out["ttft_s"]
    return out, HistogramSnapshot(TTFT_BUCKETS_S, buckets, total, count)


@dataclass(frozen=True)
class Run:
    name: str
    engine: Replayed
    engine_means_s: dict[str, float]  # `ENGINE_MEANS` over the replay's requests
    engine_ttft_buckets: HistogramSnapshot  # vLLM's own TTFT histogram over the replay
    simulated_in_steps_s: npt.NDArray[np.float64]  # arrival → prompt done in the simulator's steps
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
    before, ttft_before = _sums(vllm_engine)
    engine = replay(vllm_engine, arrivals, isl, osl, seed=3)
    after, ttft_after = _sums(vllm_engine)
    means = {k: (after[k][0] - before[k][0]) / max(after[k][1] - before[k][1], 1.0) for k in ENGINE_MEANS}
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
        means,
        ttft_after.minus(ttft_before),
        records.prefill_end_s - records.arrival_s,
        records.ttft_s,
        records.tpot_s,
        float(sized.ttft_s[0]),
        float(sized.tpot_s[0]),
        float(sized.itl_s[0]),
    )


def _error(model: float, engine: float) -> float:
    return model / engine - 1.0


def test_the_simulator_against_the_engine(run: Run, engine_figures: list[str]) -> None:
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
    # Where a TTFT goes, in means (ms): the client's, vLLM's own (from its API server's arrival), the
    # engine core's queue + prefill; the simulator's, and its part in the replica's steps.
    m = {k: v * 1000 for k, v in run.engine_means_s.items()}
    print(
        f"  mean TTFT: client {np.mean(e.ttft_s) * 1000:.1f}, vLLM {m['ttft_s']:.1f}, engine core queue + "
        f"prefill {m['queue_s'] + m['prefill_s']:.1f}; simulator {np.mean(run.simulated_ttft_s) * 1000:.1f}, "
        f"in steps {np.mean(run.simulated_in_steps_s) * 1000:.1f}. Mean TPOT: client "
        f"{np.nanmean(e.tpot_s) * 1000:.2f}, vLLM {m['tpot_s']:.2f}, "
        f"simulator {np.nanmean(run.simulated_tpot_s) * 1000:.2f}"
    )
    # vLLM's own TTFT (from its API server's arrival) as Prometheus reads it, by histogram_quantile
    # over its buckets (0.02, 0.04, 0.06, 0.08, 0.1, 0.25 s around these figures: coarse).
    h = run.engine_ttft_buckets
    print(
        f"  vLLM's TTFT from its buckets: p50 {h.quantile(0.5) * 1000:.1f} ms, p90 {h.quantile(0.9) * 1000:.1f} ms "
        f"(simulator {_error(_q(run.simulated_ttft_s, 0.5), h.quantile(0.5)):+.0%}, "
        f"{_error(_q(run.simulated_ttft_s, 0.9), h.quantile(0.9)):+.0%})"
    )
    errors = {name: f"{_error(sim, real):+.0%}" for name, (sim, real) in rows.items()}
    engine_figures.append(
        f"{run.name}: simulator vs engine: TTFT p50/p90 {errors['TTFT p50']}/{errors['TTFT p90']} "
        f"(vLLM's buckets {_error(_q(run.simulated_ttft_s, 0.5), h.quantile(0.5)):+.0%}/"
        f"{_error(_q(run.simulated_ttft_s, 0.9), h.quantile(0.9)):+.0%}), "
        f"TPOT p50/p90 {errors['TPOT p50']}/{errors['TPOT p90']}"
    )
    # Sanity bounds only (module docstring): the decode profile measured on this 2-core test bed has
    # come out up to 2.5× fast in a full-suite run; the figures are what the note reports. TTFT is
    # held against vLLM's own, which the client's stalls leave out: with a second suite running
    # beside it, the client's p90 TTFT at light load was 333 ms where vLLM's buckets read 40 ms.
    assert 0.1 <= _q(run.simulated_ttft_s, 0.5) / h.quantile(0.5) <= 10.0
    assert 0.1 <= _q(run.simulated_ttft_s, 0.9) / h.quantile(0.9) <= 10.0
    for name in ("TPOT p50", "TPOT p90"):
        sim, real = rows[name]
        assert 0.1 <= sim / real <= 10.0, name
    # Against vLLM's own accounting, which leaves out the client and most of the API server, the
    # simulator's means are held within 4×: its time in the replica's steps against the engine core's
    # queue + prefill, its per-request TPOT against vLLM's. Seen 0.55–1.1 in the engine tests alone;
    # in a full-suite CI run (the test cluster's apiserver, etcd and controller manager still up) the
    # engine ran 2.5–2.8× slower than its profile of a minute before under heavy and bursty load
    # (0.36 and 0.40).
    s = run.engine_means_s
    in_steps = float(np.mean(run.simulated_in_steps_s)) / (s["queue_s"] + s["prefill_s"])
    tpot = float(np.nanmean(run.simulated_tpot_s)) / s["tpot_s"]
    assert 0.25 <= in_steps <= 4.0, in_steps
    assert 0.25 <= tpot <= 4.0, tpot


def test_the_planner_against_the_engine(run: Run, engine_figures: list[str]) -> None:
    e = run.engine
    ttft, tpot, itl = _q(e.ttft_s, 0.9), _q(e.tpot_s, 0.9), _q(e.itl_s, 0.9)
    vllm_ttft = run.engine_ttft_buckets.quantile(0.9)
    simulated = _q(run.simulated_tpot_s, 0.9)
    print(
        f"\n{run.name}: planner vs engine: p90 TTFT {run.predicted_ttft_p90_s * 1000:.1f} vs {ttft * 1000:.1f} ms "
        f"({_error(run.predicted_ttft_p90_s, ttft):+.0%}; vLLM's buckets {vllm_ttft * 1000:.1f} ms, "
        f"{_error(run.predicted_ttft_p90_s, vllm_ttft):+.0%}), "
        f"p90 per-request TPOT {run.predicted_tpot_p90_s * 1000:.2f} vs {tpot * 1000:.2f} ms "
        f"({_error(run.predicted_tpot_p90_s, tpot):+.0%}), p90 inter-token "
        f"{run.predicted_itl_p90_s * 1000:.2f} vs {itl * 1000:.2f} ms ({_error(run.predicted_itl_p90_s, itl):+.0%})"
    )
    print(f"  planner vs simulator: p90 per-request TPOT {_error(run.predicted_tpot_p90_s, simulated):+.0%}")
    engine_figures.append(
        f"{run.name}: planner vs engine: p90 TTFT {_error(run.predicted_ttft_p90_s, ttft):+.0%} "
        f"(vLLM's buckets {_error(run.predicted_ttft_p90_s, vllm_ttft):+.0%}), p90 per-request TPOT "
        f"{_error(run.predicted_tpot_p90_s, tpot):+.0%} (vs the simulator "
        f"{_error(run.predicted_tpot_p90_s, simulated):+.0%}), "
        f"p90 inter-token {_error(run.predicted_itl_p90_s, itl):+.0%}"
    )
    assert np.isfinite(run.predicted_ttft_p90_s) and np.isfinite(run.predicted_itl_p90_s)
    assert 0.1 <= run.predicted_itl_p90_s / itl <= 10.0
    # TTFT against vLLM's own, as in the simulator's test.
    assert 0.1 <= run.predicted_ttft_p90_s / vllm_ttft <= 10.0
    assert 0.1 <= run.predicted_tpot_p90_s / tpot <= 10.0
    # On the same profile and trace the planner's per-request p90 is the simulator's, within 25% on
    # every trace, bursts of five included (the engine's own timing noise is out of this comparison;
    # seen −10%…+10%).
    assert abs(run.predicted_tpot_p90_s / simulated - 1.0) <= 0.25, (run.predicted_tpot_p90_s, simulated)
