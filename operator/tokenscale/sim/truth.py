"""Ground truth of a simulated run: what really happened in a window, from exact per-request records.

Called by `sim.exporter` (`LiveFleet.truth`, `GET /truth`) and by the tests that check what the
planner reads through Prometheus against it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from tokenscale.sim.snapshot import RequestRecords

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Truth:
    """What really happened in (start_s, end_s] of simulated time, from exact per-request records.

    Each figure is over the requests whose event falls in the window, as a metric observed at that
    event counts them: arrivals (rate), first tokens (TTFT, as the TTFT histogram), finishes (ISL,
    OSL, TPOT, ITL). TPOT per request = (finish − first token)/(OSL − 1), OSL > 1 only; ITL mean =
    Σ(finish − first token)/Σ(OSL − 1), the token-weighted mean an ITL histogram's sum/count gives;
    ITL quantiles weight each request's TPOT by its OSL − 1 tokens. None where nothing happened.
    """

    start_s: float
    end_s: float
    arrivals: int
    arrival_rate_per_s: float | None
    first_tokens: int
    finished: int
    isl_mean_tokens: float | None
    osl_mean_tokens: float | None
    ttft_mean_s: float | None
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    itl_mean_s: float | None
    itl_p50_s: float | None
    itl_p90_s: float | None
    tpot_p50_s: float | None
    tpot_p90_s: float | None

    def as_json(self) -> dict[str, float | int | None]:
        return asdict(self)


def ground_truth(records: RequestRecords, start_s: float, end_s: float) -> Truth:
    """The `Truth` over (start_s, end_s] from `Fleet.records()`."""
    if not end_s >= start_s:
        raise ValueError(f"window end {end_s} is before its start {start_s}")
    span_s = end_s - start_s

    def within(t: FloatArray) -> npt.NDArray[np.bool_]:
        out: npt.NDArray[np.bool_] = (t > start_s) & (t <= end_s)  # NaN (not yet) compares False
        return out

    arrived = within(records.arrival_s)
    first = within(records.first_token_s)
    done = within(records.finish_s)
    ttft = records.ttft_s[first]
    steps = (records.osl_tokens[done] - 1).astype(np.float64)
    decode_s = (records.finish_s - records.first_token_s)[done]
    multi = steps > 0
    tpot = decode_s[multi] / steps[multi]
    n_arrived = int(arrived.sum())
    return Truth(
        start_s=start_s,
        end_s=end_s,
        arrivals=n_arrived,
        arrival_rate_per_s=n_arrived / span_s if span_s > 0 else None,
        first_tokens=len(ttft),
        finished=int(done.sum()),
        isl_mean_tokens=_mean(records.isl_tokens[done].astype(np.float64)),
        osl_mean_tokens=_mean(steps + 1.0),
        ttft_mean_s=_mean(ttft),
        ttft_p50_s=_quantile(ttft, 0.5),
        ttft_p90_s=_quantile(ttft, 0.9),
        itl_mean_s=float(decode_s[multi].sum() / steps[multi].sum()) if multi.any() else None,
        itl_p50_s=_weighted_quantile(tpot, steps[multi], 0.5),
        itl_p90_s=_weighted_quantile(tpot, steps[multi], 0.9),
        tpot_p50_s=_quantile(tpot, 0.5),
        tpot_p90_s=_quantile(tpot, 0.9),
    )


def _mean(x: FloatArray) -> float | None:
    return float(x.mean()) if len(x) else None


def _quantile(x: FloatArray, q: float) -> float | None:
    return float(np.quantile(x, q)) if len(x) else None


def _weighted_quantile(x: FloatArray, weights: FloatArray, q: float) -> float | None:
    """The smallest x whose cumulative weight reaches q of the total (a weighted lower quantile)."""
    if not len(x):
        return None
    order = np.argsort(x, kind="stable")
    cumulative = np.cumsum(weights[order])
    i = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
    return float(x[order][min(i, len(x) - 1)])
