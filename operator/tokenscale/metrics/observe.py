"""Build the planner's `Observation` of one InferencePool from Prometheus, with explicit data quality.

Called by the controller every interval and by `tokenscale plan --prometheus`. All queries of one
observation are evaluated at the same instant and run concurrently (`PrometheusClient.query`
runs each off the event loop with a deadline). What cannot be read becomes `None` with a
`DataNote` saying why — missing series, stale series, NaN (0/0 at idle), too few samples, counter
resets, coarse buckets, Prometheus unreachable — never a silent 0 (STYLE.md §16).

Signals (PromQL in `metrics.promql`, names in `metrics.presets`):
- offered load: finished requests plus the growth of requests in the system over the window,
  (Δ finished + Δ(running + waiting)) / window, so a saturated fleet's load is not capped at its
  completion rate (DESIGN.md, "Metrics presets");
- request lengths: mean = histogram `_sum` / `_count`; c² estimated from the buckets
  (`planner.observation.moments_from_buckets`); or token counters / finished requests;
- burstiness: index of dispersion of finished-request counts in bins (≈ c_a², 1 for Poisson);
- TTFT and TPOT quantiles: `histogram_quantile` over the window, with a note when the objective's
  target falls in a bucket wider than half the target (the interpolated quantile is coarse there);
- running and waiting requests, KV-cache use, replicas seen in the metrics (series per pool).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass

from tokenscale.api import InferencePoolSpec, Objective, Role, prompt_role, serving_role
from tokenscale.metrics import promql
from tokenscale.metrics.presets import PRESETS, EnginePreset, LengthSeries
from tokenscale.metrics.prometheus import PrometheusClient, PrometheusError, Sample
from tokenscale.planner import lengths as lengths_mod
from tokenscale.planner.lengths import LengthDistribution
from tokenscale.planner.observation import (
    PLAUSIBLE_MAX,
    DataNote,
    LatencyHistogram,
    NoteKind,
    Observation,
    ReplicaCounts,
    dispersion_bin_s,
    implausible,
    moments_from_buckets,
)

MIN_QUANTILE_SAMPLES = 20  # fewer observations in the window than this: the quantile gets a note
COARSE_BUCKET_WIDTH = 0.5  # bucket width / target above this: the quantile near the target is coarse
STALE_LOOKBACK_S = 3600.0  # a series seen within this lookback but not in the window is "stale"


# The names of one observation's queries, each the `tokenscale_signal` label of its answers in the
# batch (`_run_batched`) and the key of `ObservationResult.queries`: `_Plan.build` asks under these
# names and `_assemble` reads the answers by the same ones.
Q_FINISHED = "finished"
Q_FINISHED_RESETS = "finished_resets"
Q_DISPERSION = "dispersion"
Q_IN_SYSTEM_DELTA = "in_system_delta"
Q_PREFILL_BUCKETS = "prefill_buckets"
Q_PREFILL_SUM = "prefill_sum"


@dataclass(frozen=True)
class LengthQueries:
    """The query names of one request-length signal ("isl" or "osl")."""

    buckets: str
    total: str
    tokens: str

    @classmethod
    def of(cls, signal: str) -> LengthQueries:
        return cls(f"{signal}_buckets", f"{signal}_sum", f"{signal}_tokens")


@dataclass(frozen=True)
class LatencyQueries:
    """The query names of the i-th alternative series of one latency signal ("ttft", "tpot", "itl")."""

    buckets: str
    quantile: str
    total: str

    @classmethod
    def of(cls, signal: str, i: int) -> LatencyQueries:
        return cls(f"{signal}_buckets_{i}", f"{signal}_quantile_{i}", f"{signal}_sum_{i}")


def running_query(role: Role) -> str:
    """The name of the query of a pool's running requests."""
    return f"running_{role}"


def waiting_query(role: Role) -> str:
    """The name of the query of a pool's waiting requests."""
    return f"waiting_{role}"


def replicas_query(role: Role) -> str:
    """The name of the query of a pool's replicas seen in the metrics."""
    return f"replicas_{role}"


def kv_query(i: int) -> str:
    """The name of the query of the i-th alternative KV-cache usage gauge."""
    return f"kv_{i}"


@dataclass(frozen=True)
class Histogram:
    """One histogram over the window: finite bucket bounds, cumulative counts, total count and sum."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    count: float
    total: float | None


@dataclass(frozen=True)
class ObservationResult:
    """The observation and what was asked: for `plan --prometheus` output and for the operator's metrics."""

    observation: Observation
    queries: Mapping[str, str]
    errors: Mapping[str, str]  # query name -> error kind, for queries that failed outright
    metrics_replicas: Mapping[Role, int]  # series per pool: replicas that export metrics


class _Plan:
    """The queries of one observation, named, and the label matchers they use."""

    def __init__(self, spec: InferencePoolSpec, preset: EnginePreset) -> None:
        self.spec, self.preset = spec, preset
        self.window_s = spec.metrics.window.seconds
        self.base = {preset.model_label: spec.model, **spec.metrics.labels}
        self.roles = tuple(spec.active_pools())
        self.serving = self.base if preset.request_source == "frontend" else self.pool(serving_role(spec.mode))
        self.queries: dict[str, str] = {}

    def pool(self, role: Role) -> dict[str, str]:
        pool = self.spec.active_pools()[role]
        return {**self.base, **pool.metrics_labels}

    def add(self, name: str, query: str) -> None:
        self.queries[name] = query

    def build(self) -> None:
        p, w, spec = self.preset, self.window_s, self.spec
        self.add(Q_FINISHED, promql.increase_sum(p.finished_requests, self.serving, w))
        self.add(Q_FINISHED_RESETS, promql.resets_sum(p.finished_requests, self.serving, w))
        self.add(Q_DISPERSION, promql.count_dispersion(p.finished_requests, self.serving, w, dispersion_bin_s(w)))
        if p.in_system:
            self.add(Q_IN_SYSTEM_DELTA, promql.gauge_delta_sum(p.in_system, self.base, w))
        for signal, series in (("isl", p.isl), ("osl", p.osl)):
            lq = LengthQueries.of(signal)
            if series.histogram:
                self.add(lq.buckets, promql.histogram_buckets(series.histogram, self.serving, w))
                self.add(lq.total, promql.histogram_sum(series.histogram, self.serving, w))
            elif series.tokens_counter:
                self.add(lq.tokens, promql.increase_sum(series.tokens_counter, self.serving, w))
        for signal, names, q in (
            ("ttft", p.ttft, spec.objectives.ttft.quantile),
            ("tpot", p.tpot, spec.objectives.tpot.quantile),
            ("itl", p.itl, spec.objectives.tpot.quantile),
        ):
            for i, name in enumerate(names):
                hq = LatencyQueries.of(signal, i)
                self.add(hq.buckets, promql.histogram_buckets(name, self.serving, w))
                self.add(hq.quantile, promql.histogram_quantile(q, name, self.serving, w))
                self.add(hq.total, promql.histogram_sum(name, self.serving, w))
        if p.prefill_time:
            prefill = self.pool(prompt_role(spec.mode)) if p.request_source == "serving-pool" else self.base
            self.add(Q_PREFILL_BUCKETS, promql.histogram_buckets(p.prefill_time, prefill, w))
            self.add(Q_PREFILL_SUM, promql.histogram_sum(p.prefill_time, prefill, w))
        per_pool_metric = p.running or (p.finished_requests if p.request_source == "serving-pool" else None)
        for role in self.roles:
            if p.running:
                self.add(running_query(role), promql.gauge_sum(p.running, self.pool(role)))
            if per_pool_metric:
                self.add(replicas_query(role), promql.series_count(per_pool_metric, self.pool(role)))
        if p.waiting and p.request_source == "serving-pool":
            for role in self.roles:
                self.add(waiting_query(role), promql.gauge_sum(p.waiting, self.pool(role)))
        elif p.waiting:  # one queue at the frontend, ahead of the pool that takes the prompts
            self.add(waiting_query(prompt_role(self.spec.mode)), promql.gauge_sum(p.waiting, self.base))
        for i, name in enumerate(p.kv_usage):
            self.add(kv_query(i), promql.gauge_avg(name, self.pool(serving_role(spec.mode))))


async def observe(
    spec: InferencePoolSpec,
    client: PrometheusClient,
    now_s: float,
    replicas: Mapping[Role, ReplicaCounts] | None = None,
) -> ObservationResult:
    """Read one Observation at Unix time `now_s`. `replicas` come from /scale; without them, from the metrics."""
    preset = PRESETS[spec.metrics.engine] if spec.metrics.engine != "custom" else None
    if preset is None:
        return await _observe_custom(spec, client, now_s, replicas)
    plan = _Plan(spec, preset)
    plan.build()
    answers = await _run_batched(client, plan.queries, now_s)
    return await _assemble(spec, preset, plan, client, answers, now_s, replicas)


SIGNAL_LABEL = "tokenscale_signal"


async def _run_batched(
    client: PrometheusClient, queries: Mapping[str, str], now_s: float
) -> dict[str, list[Sample] | PrometheusError]:
    """All queries of one observation in one request: each tagged with its name, joined with `or`.

    `label_replace(q, "tokenscale_signal", "<name>", "", "")` adds a label no engine series has,
    so the union keeps every sub-result apart, and the answer is split back by that label. One
    HTTP round trip per pool and cycle instead of ~20: at hundreds of pools the operator's time
    went to HTTP overhead, not to Prometheus (bench/bench_operator.py). An error fails every
    signal alike, which is what one unreachable or rejecting Prometheus means anyway.
    """
    union = " or ".join(
        f'label_replace({query}, "{SIGNAL_LABEL}", "{name}", "", "")' for name, query in queries.items()
    )
    try:
        samples = await client.query(union, now_s)
    except PrometheusError as err:
        return {name: err for name in queries}
    out: dict[str, list[Sample] | PrometheusError] = {name: [] for name in queries}
    for sample in samples:
        name = sample.labels.get(SIGNAL_LABEL)
        answer = out.get(name) if name is not None else None
        if isinstance(answer, list):
            labels = {k: v for k, v in sample.labels.items() if k != SIGNAL_LABEL}
            answer.append(Sample(labels, sample.value))
    return out


async def _run_all(
    client: PrometheusClient, queries: Mapping[str, str], now_s: float
) -> dict[str, list[Sample] | PrometheusError]:
    names = list(queries)
    calls: list[Awaitable[list[Sample]]] = [client.query(queries[n], now_s) for n in names]
    results = await asyncio.gather(*calls, return_exceptions=True)
    out: dict[str, list[Sample] | PrometheusError] = {}
    for name, result in zip(names, results, strict=True):
        if isinstance(result, PrometheusError):
            out[name] = result
        elif isinstance(result, BaseException):
            raise result
        else:
            out[name] = result
    return out


class _Reader:
    """Turns answers into values and notes."""

    def __init__(self, answers: Mapping[str, list[Sample] | PrometheusError]) -> None:
        self.answers = answers
        self.notes: list[DataNote] = []
        self.errors: dict[str, NoteKind] = {}
        self.implausible: dict[str, str] = {}  # query name -> why its answer was refused

    def samples(self, name: str) -> list[Sample] | None:
        """The samples of a query, or None when it failed (the failure is noted once)."""
        answer = self.answers.get(name)
        if answer is None:
            return None
        if isinstance(answer, PrometheusError):
            self.errors[name] = answer.kind
            return None
        return answer

    def scalar(self, name: str, signed: bool = False) -> float | None:
        """The single value of an aggregated query: None when the query failed or found no series.

        An answer no aggregated query can give — several series, an infinite value, a negative one
        unless `signed` (a gauge's change over the window) — is noted as implausible and read as
        missing (NaN passes: callers read it as 0/0 at idle).
        """
        samples = self.samples(name)
        if not samples:
            return None
        if len(samples) > 1:
            self.note(name, "implausible", f"{len(samples)} series answered one aggregated query (duplicated series)")
            return None
        value = samples[0].value
        if (value < 0 and not signed) or math.isinf(value):
            self.note(name, "implausible", f"value {value:g} cannot be a count, a rate or a fraction")
            return None
        return value

    def histogram(self, buckets: str, total: str) -> Histogram | None:
        """The histogram of a `sum by (le)` buckets query and its `_sum` query; None without a +Inf bucket."""
        samples = self.samples(buckets)
        if not samples:
            return None
        by_le: dict[float, float] = {}
        for s in samples:
            try:
                le = float(s.labels.get("le", "nan"))
            except ValueError:
                continue
            if le in by_le:
                self.note(buckets, "implausible", f"bucket le={le:g} answered twice (duplicated series)")
                return None
            by_le[le] = s.value
        if math.inf not in by_le:
            return None
        finite = sorted(b for b in by_le if math.isfinite(b))
        counts = [by_le[b] for b in (*finite, math.inf)]
        # increase() extrapolates every bucket by the same factor, so order holds up to rounding.
        decreasing = any(b < a - 1e-6 * max(a, 1.0) for a, b in zip(counts[:-1], counts[1:], strict=True))
        if decreasing or any(not math.isfinite(c) or c < 0 for c in counts):
            self.note(buckets, "implausible", "bucket counts are negative, infinite or decreasing with le")
            return None
        return Histogram(tuple(finite), tuple(counts[:-1]), counts[-1], self.scalar(total))

    def note(self, signal: str, kind: NoteKind, message: str) -> None:
        self.notes.append(DataNote(signal, kind, message))
        if kind == "implausible":
            self.implausible.setdefault(signal, message)


async def _diagnose(
    client: PrometheusClient, metric: str, labels: Mapping[str, str], window_s: float, now_s: float
) -> tuple[NoteKind, str]:
    """Why a signal has no value: ("stale", …) if the series existed lately, else ("missing", …)."""
    where = promql.selector(metric, labels)
    lookback = max(STALE_LOOKBACK_S, 10 * window_s)
    try:
        seen = await client.query(promql.last_seen_count(metric, labels, lookback), now_s)
    except PrometheusError as err:
        return err.kind, f"{where}: {err}"
    if seen and seen[0].value > 0:
        return "stale", f"{where} has no samples in the last {window_s:g}s (last seen within {lookback:g}s)"
    return "missing", f"no series {where} in Prometheus"


async def _assemble(
    spec: InferencePoolSpec,
    preset: EnginePreset,
    plan: _Plan,
    client: PrometheusClient,
    answers: Mapping[str, list[Sample] | PrometheusError],
    now_s: float,
    replicas: Mapping[Role, ReplicaCounts] | None,
) -> ObservationResult:
    """The observation from the batch's answers: each signal read in turn, its notes in that order."""
    if answers and all(isinstance(a, PrometheusError) for a in answers.values()):
        return _unanswered(plan, answers, now_s, replicas)
    r = _Reader(answers)
    rate, finished = await _offered_load(r, client, plan, preset, now_s)
    rate = _plausible(r, "request_rate", rate)
    dispersion = r.scalar(Q_DISPERSION)
    arrival_cv2 = dispersion if dispersion is not None and math.isfinite(dispersion) and dispersion >= 0 else None
    isl = await _length(r, client, plan, "isl", preset.isl, finished, now_s)
    osl = await _length(r, client, plan, "osl", preset.osl, finished, now_s)
    isl = (_plausible(r, "isl_mean", isl[0]), *isl[1:])
    osl = (_plausible(r, "osl_mean", osl[0]), *osl[1:])
    # Latency quantiles, and the TTFT buckets the planner's tail fit matches.
    ttft_q, _, ttft_hist = await _quantile(r, client, plan, "ttft", preset.ttft, spec.objectives.ttft, now_s)
    ttft_buckets = (
        LatencyHistogram.from_cumulative(ttft_hist.bounds, ttft_hist.cumulative, ttft_hist.count)
        if ttft_hist is not None
        else None
    )
    tpot_q, itl_q, itl_mean = await _tpot_and_itl(r, client, plan, preset, spec, now_s)
    prefill_mean = _prefill_time_mean(r, preset)
    running, waiting, kv = _gauges(r, plan, preset)
    seen = _replicas_seen(r, plan)
    if replicas is None:  # a pool whose count could not be read is left out, never counted as 0
        replicas = {role: ReplicaCounts(n, n) for role, n in seen.items()}
    for name, kind in r.errors.items():
        if not any(n.kind == kind for n in r.notes):
            r.note(name, kind, f"query {name} failed: {kind}")

    obs = Observation(
        time_s=now_s,
        request_rate_per_s=rate,
        isl_mean_tokens=isl[0],
        osl_mean_tokens=osl[0],
        replicas=dict(replicas),
        isl_cv2=isl[1],
        isl_distribution=isl[2],
        osl_cv2=osl[1],
        arrival_cv2=arrival_cv2,
        dispersion_bin_s=dispersion_bin_s(plan.window_s),
        ttft_quantile_s=ttft_q,
        ttft_histogram=ttft_buckets,
        tpot_quantile_s=tpot_q,
        itl_quantile_s=itl_q,
        itl_mean_s=itl_mean,
        prefill_time_mean_s=prefill_mean,
        waiting_requests=waiting,
        running_requests=running,
        kv_usage_fraction=kv,
        notes=tuple(r.notes),
    )
    return ObservationResult(obs, plan.queries, dict(r.errors), seen)


def _unanswered(
    plan: _Plan,
    answers: Mapping[str, list[Sample] | PrometheusError],
    now_s: float,
    replicas: Mapping[Role, ReplicaCounts] | None,
) -> ObservationResult:
    """Not one query answered (down, timing out, an HTTP error page, garbage): one failure, said once
    per load signal, and no replica count read from the metrics (0 would be a lie)."""
    r = _Reader(answers)
    first = next(a for a in answers.values() if isinstance(a, PrometheusError))
    for signal in ("request_rate", "isl_mean", "osl_mean"):
        r.note(signal, first.kind, str(first))
    obs = Observation(now_s, None, None, None, dict(replicas or {}), notes=tuple(r.notes))
    return ObservationResult(obs, plan.queries, {n: first.kind for n in answers}, {})


async def _offered_load(
    r: _Reader, client: PrometheusClient, plan: _Plan, preset: EnginePreset, now_s: float
) -> tuple[float | None, float | None]:
    """(offered load in requests per second, requests finished in the window); None with a note where unreadable.

    The offered load is the finished requests plus the growth of the requests in the system, over
    the window, so a saturated fleet's load is not capped at its completion rate.
    """
    w = plan.window_s
    finished = r.scalar(Q_FINISHED)
    if finished is None:
        kind, message = await _explain(r, client, Q_FINISHED, preset.finished_requests, plan.serving, w, now_s)
        r.note("request_rate", kind, message)
        return None, None
    if math.isnan(finished):
        r.note("request_rate", "nan", f"{preset.finished_requests}: the increase over the window is NaN")
        return None, finished
    growth = r.scalar(Q_IN_SYSTEM_DELTA, signed=True) if preset.in_system else None
    if growth is None or math.isnan(growth):
        r.note(
            "request_rate",
            "approximate",
            "offered load from finished requests only (no running/waiting gauges): a saturated fleet reads low",
        )
        growth = 0.0
    rate = max(finished + growth, 0.0) / w
    resets = r.scalar(Q_FINISHED_RESETS)
    if resets is not None and resets > 0:
        r.note(
            "request_rate",
            "counter-reset",
            f"{preset.finished_requests} reset {resets:g} time(s) in the window (engine restart); "
            "increase() compensated",
        )
    return rate, finished


def _plausible(r: _Reader, signal: str, value: float | None, noted_as: str | None = None) -> float | None:
    """`value`, or None with an implausible note (on `noted_as`, else `signal`) when no pool could show
    it (`PLAUSIBLE_MAX`)."""
    why = None if value is None else implausible(signal, value)
    if why is not None:
        r.note(noted_as or signal, "implausible", f"{signal} {why}" if noted_as else why)
        return None
    return value


def _prefill_time_mean(r: _Reader, preset: EnginePreset) -> float | None:
    """The mean prefill time over the window (seconds), for engines that export its histogram."""
    prefill = r.histogram(Q_PREFILL_BUCKETS, Q_PREFILL_SUM) if preset.prefill_time else None
    if prefill is not None and prefill.count > 0 and prefill.total is not None:
        return prefill.total / prefill.count
    return None


def _gauges(r: _Reader, plan: _Plan, preset: EnginePreset) -> tuple[dict[Role, float], dict[Role, float], float | None]:
    """(running requests per pool, waiting requests per pool, KV-cache use of the serving pool).

    A count that is not finite is left out; a queue beyond `PLAUSIBLE_MAX` is noted implausible and
    left out (`_Reader.scalar` notes negative and infinite answers).
    """
    running: dict[Role, float] = {}
    waiting: dict[Role, float] = {}
    for role in plan.roles:
        value = r.scalar(running_query(role))
        if value is not None and math.isfinite(value):
            running[role] = value
        value = _plausible(r, "waiting", r.scalar(waiting_query(role)), noted_as=waiting_query(role))
        if value is not None and math.isfinite(value):
            waiting[role] = value
    kv = next(
        (v for i in range(len(preset.kv_usage)) if (v := r.scalar(kv_query(i))) is not None and math.isfinite(v)), None
    )
    if kv is not None and kv > 1.0:
        r.note("kv_usage", "implausible", f"KV-cache use {kv:g} is above 1 (a fraction of the cache)")
        kv = None
    return running, waiting, kv


def _replicas_seen(r: _Reader, plan: _Plan) -> dict[Role, int]:
    """Replicas per pool that export metrics (series per pool); a pool whose count cannot be read is left out."""
    seen: dict[Role, int] = {}
    for role in plan.roles:
        count = r.scalar(replicas_query(role))
        if count is not None and math.isfinite(count):
            seen[role] = int(count)
    return seen


async def _explain(
    r: _Reader,
    client: PrometheusClient,
    query_name: str,
    metric: str,
    labels: Mapping[str, str],
    window_s: float,
    now_s: float,
) -> tuple[NoteKind, str]:
    """Kind and message for a query without a value: its own error, or stale/missing after a look back."""
    answer = r.answers.get(query_name)
    if isinstance(answer, PrometheusError):
        return answer.kind, f"{metric}: {answer}"
    if query_name in r.implausible:  # it answered, with garbage: say so, not "no series" (issue 13)
        return "implausible", f"{metric}: {r.implausible[query_name]}"
    return await _diagnose(client, metric, labels, window_s, now_s)


async def _length(
    r: _Reader,
    client: PrometheusClient,
    plan: _Plan,
    signal: str,
    series: LengthSeries,
    finished: float | None,
    now_s: float,
) -> tuple[float | None, float | None, LengthDistribution | None]:
    """(mean, c², shape from the buckets) of one length signal; Nones with a note where unreadable."""
    name = f"{signal}_mean"
    lq = LengthQueries.of(signal)
    if series.histogram:
        h = r.histogram(lq.buckets, lq.total)
        if h is None:
            kind, message = await _explain(
                r, client, lq.buckets, series.histogram + "_bucket", plan.serving, plan.window_s, now_s
            )
            r.note(name, kind, message)
            return None, None, None
        if h.count <= 0 or h.total is None or math.isnan(h.total):
            r.note(name, "nan", f"no request finished in the last {plan.window_s:g}s (0/0)")
            return None, None, None
        cumulative = (*h.cumulative, h.count)
        mean, cv2 = moments_from_buckets(h.bounds, cumulative, h.total, h.count)
        return mean, cv2, lengths_mod.from_buckets(h.bounds, cumulative, h.total, h.count)
    if series.tokens_counter:
        tokens = r.scalar(lq.tokens)
        if tokens is None:
            kind, message = await _explain(
                r, client, lq.tokens, series.tokens_counter, plan.serving, plan.window_s, now_s
            )
            r.note(name, kind, message)
            return None, None, None
        if finished is None or finished <= 0 or math.isnan(tokens):
            r.note(name, "nan", f"no request finished in the last {plan.window_s:g}s (0/0)")
            return None, None, None
        return tokens / finished, None, None
    r.note(
        name,
        "missing",
        f"engine {plan.preset.engine} exports no request lengths; use engine: custom with metrics.queries",
    )
    return None, None, None


async def _tpot_and_itl(
    r: _Reader, client: PrometheusClient, plan: _Plan, preset: EnginePreset, spec: InferencePoolSpec, now_s: float
) -> tuple[float | None, float | None, float | None]:
    """(per-request TPOT quantile, per-token ITL quantile, mean ITL). An engine without one of the two series
    has the other stand in for it, with an `approximate` note saying which and why it reads differently."""
    obj = spec.objectives.tpot
    tpot_q = itl_q = itl_mean = tpot_mean = None
    if preset.tpot:
        tpot_q, tpot_mean, _ = await _quantile(r, client, plan, "tpot", preset.tpot, obj, now_s)
    if preset.itl:
        itl_q, itl_mean, _ = await _quantile(r, client, plan, "itl", preset.itl, obj, now_s)
    if not preset.tpot and itl_q is not None:
        r.note(
            "tpot_quantile",
            "approximate",
            f"{preset.engine} exports no per-request TPOT: the per-token {preset.itl[0]} stands in for it "
            "(it reads lower than per-request TPOT when decode steps stall behind prompts)",
        )
        tpot_q = itl_q
    if not preset.itl and tpot_mean is not None:
        r.note(
            "itl_mean",
            "approximate",
            f"{preset.engine} exports no per-token latency: the mean of {preset.tpot[0]} (per request) stands in",
        )
        itl_mean = tpot_mean
    return tpot_q, itl_q, itl_mean


async def _quantile(
    r: _Reader,
    client: PrometheusClient,
    plan: _Plan,
    signal: str,
    names: tuple[str, ...],
    objective: Objective,
    now_s: float,
) -> tuple[float | None, float | None, Histogram | None]:
    """(quantile, mean, buckets) of the first of `names` that has series; notes on why not, or on coarse buckets."""
    q, target_s = objective.quantile, objective.target.seconds
    label = f"p{q * 100:g} {signal.upper()}"
    for i, name in enumerate(names):
        hq = LatencyQueries.of(signal, i)
        h = r.histogram(hq.buckets, hq.total)
        if h is None:
            continue
        _resolution_note(r, signal, label, h.bounds, target_s)
        if h.count <= 0:
            r.note(f"{signal}_quantile", "nan", f"{name}: no observations in the last {plan.window_s:g}s")
            return None, None, h
        value = r.scalar(hq.quantile)
        mean = h.total / h.count if h.total is not None and math.isfinite(h.total) else None
        if value is None or math.isnan(value):
            r.note(f"{signal}_quantile", "nan", f"{name}: histogram_quantile gave no value")
            return None, mean, h
        if math.isinf(value):
            top = h.bounds[-1] if h.bounds else math.nan
            r.note(f"{signal}_quantile", "coarse-buckets", f"{label} is above the highest bucket ({top:g}s)")
            return None, mean, h
        if h.count < MIN_QUANTILE_SAMPLES:
            r.note(
                f"{signal}_quantile",
                "too-few-samples",
                f"{label} from only {h.count:.0f} observations in the last {plan.window_s:g}s",
            )
        return value, mean, h
    kind, message = await _explain(
        r, client, LatencyQueries.of(signal, 0).buckets, names[0] + "_bucket", plan.serving, plan.window_s, now_s
    )
    r.note(f"{signal}_quantile", kind, message)
    return None, None, None


def _resolution_note(r: _Reader, signal: str, label: str, bounds: tuple[float, ...], target_s: float) -> None:
    """Note when the objective's target sits in a bucket wider than COARSE_BUCKET_WIDTH × target."""
    above = [b for b in bounds if b >= target_s]
    if not above:
        top = bounds[-1] if bounds else math.nan
        r.note(
            f"{signal}_quantile",
            "coarse-buckets",
            f"{label} target {target_s:g}s is above the highest bucket ({top:g}s): the quantile cannot be read there",
        )
        return
    hi = above[0]
    below = [b for b in bounds if b < target_s]
    lo = below[-1] if below else 0.0
    if hi - lo > COARSE_BUCKET_WIDTH * target_s:
        r.note(
            f"{signal}_quantile",
            "coarse-buckets",
            f"{label} target {target_s:g}s lies between buckets {lo:g}s and {hi:g}s: "
            "histogram_quantile interpolates linearly across it, so the reading near the target is coarse",
        )


async def _observe_custom(
    spec: InferencePoolSpec,
    client: PrometheusClient,
    now_s: float,
    replicas: Mapping[Role, ReplicaCounts] | None,
) -> ObservationResult:
    """engine: custom — every signal is the user's PromQL; `$quantile` and `$window` are substituted."""
    custom = spec.metrics.queries
    assert custom is not None  # the API models reject custom without queries
    window = promql.duration(spec.metrics.window.seconds)
    subst = {
        "request_rate": custom.request_rate,
        "isl_mean": custom.isl_mean,
        "osl_mean": custom.osl_mean,
        "ttft_quantile": custom.ttft_quantile.replace("$quantile", repr(spec.objectives.ttft.quantile)),
        "tpot_quantile": custom.tpot_quantile.replace("$quantile", repr(spec.objectives.tpot.quantile)),
    }
    for name, text in (("running", custom.running), ("waiting", custom.waiting), ("kv_usage", custom.kv_usage)):
        if text:
            subst[name] = text
    queries = {k: v.replace("$window", window) for k, v in subst.items()}
    answers = await _run_all(client, queries, now_s)
    r = _Reader(answers)
    values: dict[str, float | None] = {}
    for name in queries:
        value = r.scalar(name)
        answer = answers[name]
        if isinstance(answer, PrometheusError):
            r.note(name, answer.kind, f"custom query {name}: {answer}")
        elif value is None:
            r.note(name, "missing", f"custom query {name} returned no series")
        elif math.isnan(value):
            r.note(name, "nan", f"custom query {name} returned NaN")
            value = None
        values[name] = _plausible(r, name, value) if name in PLAUSIBLE_MAX else value
    obs = Observation(
        time_s=now_s,
        request_rate_per_s=values["request_rate"],
        isl_mean_tokens=values["isl_mean"],
        osl_mean_tokens=values["osl_mean"],
        replicas=dict(replicas or {}),
        ttft_quantile_s=values["ttft_quantile"],
        tpot_quantile_s=values["tpot_quantile"],
        waiting_requests={prompt_role(spec.mode): v} if (v := values.get("waiting")) is not None else {},
        running_requests={serving_role(spec.mode): v} if (v := values.get("running")) is not None else {},
        kv_usage_fraction=values.get("kv_usage"),
        notes=tuple(r.notes),
    )
    return ObservationResult(obs, queries, dict(r.errors), {})
