"""One control cycle of one InferencePool: read, plan, act, explain.

Called by the controller's per-pool daemon every `spec.interval`. The cycle reads the pool's
targets through `/scale` (then their node groups' GPUs) and its metrics from Prometheus
(concurrently, each with a deadline), asks `planner.plan` for the counts, keeps scale-ups within the
node group's free GPUs, writes `/scale` (scale-downs first; unless dry run or paused), and writes the
status — only when it changed (STYLE.md §14). It
returns the Events to post; the controller posts them. What the cycle cannot do (a bad spec, a
missing target, a missing Secret, Prometheus down) becomes a condition and an Event, and replicas
are held, never zeroed.

`cycle` runs four steps, passing frozen values between them: `_read` (the concurrent reads) →
`decide` (pure: planner state from status, performance, free GPUs, `plan()`) → `_act` (the `/scale`
writes and their Events) → `_explain` (`record`, pure: the written scale-ups timed for the cold
start, and the status; then the status write, exported metrics, the held-decision Event). `decide`
and `record` are the operator's whole decision path; tests/test_decision_path.py holds it to the
`plan` CLI's and the simulator's.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import kubernetes
import yaml
from pydantic import ValidationError

from tokenscale import api, manifests
from tokenscale import status as st
from tokenscale.api import InferencePoolStatus, Role
from tokenscale.kube import capacity, pools, scale
from tokenscale.metrics.observe import ObservationResult, observe
from tokenscale.metrics.prometheus import Credentials, PrometheusClient
from tokenscale.planner import plan as plan_mod
from tokenscale.planner import profiles
from tokenscale.planner.observation import Observation, ReplicaCounts
from tokenscale.planner.plan import ConditionUpdate, Decision
from tokenscale.planner.reasons import ConditionType, Reason
from tokenscale.telemetry import OperatorMetrics

INVALID_SPEC_RETRY_S = 60.0


@dataclass(frozen=True)
class OperatorConfig:
    """`tokenscale run` options the cycle honours."""

    dry_run: bool = False  # advisory mode for every pool
    namespaces: tuple[str, ...] = ()  # the watched namespaces (empty: all); GPUs in use are counted from their pods
    default_prometheus_url: str | None = None  # for pools that set no spec.metrics.prometheus.url


@dataclass(frozen=True)
class EventSpec:
    """An Event for the pool: type Normal or Warning, a CamelCase reason, one sentence."""

    type: str
    reason: Reason
    message: str


@dataclass
class PrometheusClients:
    """One client per (URL, timeout, credentials), shared by the pools that use the same Prometheus."""

    clients: dict[tuple[str, float, Credentials], PrometheusClient] = field(default_factory=dict)

    def get(self, url: str, timeout_s: float, credentials: Credentials) -> PrometheusClient:
        key = (url, timeout_s, credentials)
        if key not in self.clients:
            self.clients[key] = PrometheusClient(url, timeout_s, credentials)
        return self.clients[key]

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()


@dataclass
class OperatorContext:
    """Per-process objects, made once by the startup handler and passed through kopf's memo."""

    api: kubernetes.client.ApiClient
    config: OperatorConfig
    prometheus: PrometheusClients
    metrics: OperatorMetrics
    # The last status each pool's cycle computed, with the stored status document it extends. Only a
    # cache (STYLE.md §21): a settled pool's forecasters and calibration move every cycle, but are
    # written only every `status.STATUS_REFRESH_S`; the next cycle continues from here when the
    # stored status is still the one this cache extends, and from the stored status otherwise.
    statuses: dict[tuple[str, str], tuple[Mapping[str, Any], InferencePoolStatus]] = field(default_factory=dict)

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted pool's cached status."""
        self.statuses.pop((namespace, name), None)


@dataclass(frozen=True)
class CycleOutcome:
    """What one cycle did: Events to post, when to run next, and the decision (None when it could not plan)."""

    events: tuple[EventSpec, ...]
    next_in_s: float
    wrote_status: bool
    decision: Decision | None = None


async def cycle(
    ctx: OperatorContext,
    namespace: str,
    name: str,
    body: Mapping[str, Any],
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> CycleOutcome:
    """Run one cycle for the pool whose current object is `body`: read, decide, act, explain."""
    started = time.monotonic()
    now_s = time.time()
    seen = _Seen.of(namespace, name, body)
    cached = ctx.statuses.get((namespace, name))
    previous = cached[1] if cached is not None and cached[0] == seen.status_document else seen.status
    try:
        spec = api.InferencePoolSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        message = "; ".join(manifests.format_validation_error(err, "spec."))
        return await _invalid_spec(ctx, seen, message, now_s)
    interval_s = spec.interval.seconds
    if spec.paused:
        updates = [
            ConditionUpdate(
                ConditionType.READY, "True", Reason.PAUSED, "spec.paused is true: nothing is read or changed"
            ),
            ConditionUpdate(ConditionType.SCALING_ACTIVE, "False", Reason.PAUSED, "spec.paused is true"),
        ]
        return await _conditions_only(ctx, seen, updates, now_s, interval_s)
    try:
        reads = await _read(ctx, namespace, name, spec, now_s)
    except scale.KubeError as failed:  # pools.MissingReference too
        ctx.metrics.cycle_errors.labels(namespace, name, failed.reason).inc()
        updates = [
            ConditionUpdate(ConditionType.READY, "False", failed.reason, str(failed)),
            ConditionUpdate(ConditionType.SCALING_ACTIVE, "False", failed.reason, "replicas are held: " + str(failed)),
        ]
        return await _conditions_only(ctx, seen, updates, now_s, interval_s)
    plan_started = time.perf_counter()
    try:
        decision = decide(spec, previous, reads, now_s)
    except profiles.ProfileError as err:  # an unknown GPU or model preset: the spec's, not a bug (issue 13)
        return await _invalid_spec(ctx, seen, str(err), now_s)
    ctx.metrics.planner_seconds.observe(time.perf_counter() - plan_started)
    acted = await _act(ctx, seen, spec, previous, reads, decision, logger)
    return await _explain(ctx, seen, spec, previous, reads, decision, acted, now_s, started)


@dataclass(frozen=True)
class Reads:
    """What a cycle read: the targets' `/scale`, their node groups, the ConfigMap profiles and the metrics."""

    scales: Mapping[Role, scale.ScaleState]
    capacities: Mapping[Role, capacity.GpuCapacity]
    profiles: Mapping[Role, api.PerformanceProfile]
    observation: Observation  # with the replicas `/scale` reported


@dataclass(frozen=True)
class _Acted:
    """What acting on a decision did: Events, conditions beyond the planner's, and the replicas written."""

    events: tuple[EventSpec, ...]
    conditions: tuple[ConditionUpdate, ...]
    scaled_to: Mapping[Role, int | None]  # replicas written to each pool's /scale (None: not written)


@dataclass(frozen=True)
class Recorded:
    """A cycle's outcome as status keeps it: the decision with its written scale-ups timed (for the cold
    start), what each pool became, and the status."""

    decision: Decision
    facts: Mapping[Role, st.PoolFacts]  # in the roles' own order
    status: api.InferencePoolStatus


@dataclass(frozen=True)
class _Scaled:
    """One pool's `/scale` write (or its absence): its Events and conditions, and the replicas written."""

    events: tuple[EventSpec, ...] = ()
    conditions: tuple[ConditionUpdate, ...] = ()
    scaled_to: int | None = None  # None: not written
    failed_down: str | None = None  # a scale-down that failed: under a GPU budget, the scale-ups wait for it


async def _invalid_spec(ctx: OperatorContext, seen: _Seen, message: str, now_s: float) -> CycleOutcome:
    """A spec that can never be planned: Ready=False InvalidSpec, counted, retried after a while."""
    ctx.metrics.cycle_errors.labels(seen.namespace, seen.name, Reason.INVALID_SPEC).inc()
    update = ConditionUpdate(ConditionType.READY, "False", Reason.INVALID_SPEC, message)
    return await _conditions_only(ctx, seen, [update], now_s, INVALID_SPEC_RETRY_S)


async def _read(ctx: OperatorContext, namespace: str, name: str, spec: api.InferencePoolSpec, now_s: float) -> Reads:
    """Read the targets (then their node groups), the referenced ConfigMaps and the metrics concurrently.

    Raises the first read's exception: a `scale.KubeError` is the world's (the caller holds), any
    other a bug.
    """
    reads = await asyncio.gather(
        _read_targets(ctx, namespace, spec),
        _profiles(ctx, namespace, spec),
        _observe(ctx, namespace, spec, now_s),
        return_exceptions=True,
    )
    failed = next((r for r in reads if isinstance(r, BaseException)), None)
    if failed is not None:
        raise failed
    targets, loaded_profiles, result = cast(
        tuple[tuple[dict[Role, scale.ScaleState], dict[Role, capacity.GpuCapacity]],
              dict[Role, api.PerformanceProfile], ObservationResult],
        reads,
    )  # fmt: skip
    scales, capacities = targets
    replicas = {role: ReplicaCounts(s.replicas, s.ready_replicas) for role, s in scales.items()}
    observation = replace(result.observation, replicas=replicas)
    for kind in result.errors.values():
        ctx.metrics.query_errors.labels(namespace, name, kind).inc()
    return Reads(scales, capacities, loaded_profiles, observation)


def decide(
    spec: api.InferencePoolSpec, previous: api.InferencePoolStatus | None, reads: Reads, now_s: float
) -> Decision:
    """Plan the pool from what was read and the state its status carries: the operator's decision, pure.

    Raises `profiles.ProfileError` for an unknown GPU or model preset.
    """
    performance = profiles.resolve_all(spec, reads.profiles)
    free_gpus = {
        role: room_gpus(cap, reads.scales[role].replicas, spec.active_pools()[role].gpus_per_replica)
        for role, cap in reads.capacities.items()
        if cap is not None and spec.active_pools()[role].node_group is not None
    }
    state = st.planner_state(previous)
    return plan_mod.plan(spec, reads.observation, state, now_s, performance, free_gpus=free_gpus)


async def _act(
    ctx: OperatorContext,
    seen: _Seen,
    spec: api.InferencePoolSpec,
    previous: api.InferencePoolStatus | None,
    reads: Reads,
    decision: Decision,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> _Acted:
    """Write each pool's `/scale` (scale-downs first; not in dry run), with its Events."""
    dry_run = spec.dry_run or ctx.config.dry_run
    limited = "; ".join(f"{r} {d.message}" for r, d in decision.pools.items() if d.reason == Reason.NODE_GROUP_FULL)
    events: list[EventSpec] = []
    extra: list[ConditionUpdate] = [ConditionUpdate(ConditionType.READY, "True", Reason.ACTIVE, "the pool is planned")]
    if ctx.config.dry_run and not spec.dry_run:
        extra.append(
            ConditionUpdate(ConditionType.SCALING_ACTIVE, "False", Reason.DRY_RUN, "the operator runs with --dry-run")
        )
    if limited:
        extra.append(ConditionUpdate(ConditionType.SCALING_LIMITED, "True", Reason.NODE_GROUP_FULL, limited))
        events.append(EventSpec("Warning", Reason.NODE_GROUP_FULL, limited))
    scaled_to: dict[Role, int | None] = {}
    failed_down: str | None = None
    for role in write_order(decision.pools):
        d = decision.pools[role]
        scaled = await _scale(ctx, seen, spec, role, d, previous, dry_run, failed_down, logger)
        events.extend(scaled.events)
        extra.extend(scaled.conditions)
        if scaled.failed_down is not None:
            failed_down = scaled.failed_down
        scaled_to[role] = scaled.scaled_to
        ctx.metrics.decisions.labels(seen.namespace, seen.name, role, d.binding).inc()
    return _Acted(tuple(events), tuple(extra), scaled_to)


def record(
    spec: api.InferencePoolSpec,
    previous: api.InferencePoolStatus | None,
    generation: int | None,
    reads: Reads,
    decision: Decision,
    scaled_to: Mapping[Role, int | None],
    conditions: Sequence[ConditionUpdate],
    dry_run: bool,
    now_s: float,
) -> Recorded:
    """The pure end of a cycle: the scale-ups written (`scaled_to`) timed in the decision's state, each
    pool's facts from what was read and written, and the status they lead to."""
    written = {r: n for r, n in decision.scale_ups().items() if scaled_to.get(r) is not None}
    decision = decision.written(written)
    facts: dict[Role, st.PoolFacts] = {}
    for role in decision.pools:
        s, cap = reads.scales[role], reads.capacities.get(role)
        facts[role] = st.PoolFacts(
            current_replicas=s.replicas,
            ready_replicas=s.ready_replicas,
            gpu_capacity=cap.allocatable_gpus if cap else None,
            gpus_free=cap.free_gpus if cap else None,
            scaled_to=scaled_to.get(role),
        )
    status = st.decided_status(
        spec, previous, generation, reads.observation, decision, facts, conditions, dry_run, now_s
    )
    return Recorded(decision, facts, status)


async def _scale(
    ctx: OperatorContext,
    seen: _Seen,
    spec: api.InferencePoolSpec,
    role: Role,
    d: plan_mod.PoolDecision,
    previous: api.InferencePoolStatus | None,
    dry_run: bool,
    failed_down: str | None,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> _Scaled:
    """Act on one pool's decision: nothing, a WouldScale Event (dry run), a held scale-up, or a `/scale` write."""
    if not d.changed:
        return _Scaled()
    verb = "would scale" if dry_run else "scaled"
    text = f"{role} {verb} {d.current_replicas}→{d.desired_replicas}: {d.message or d.reason}"
    if dry_run:
        if _desired_before(previous, role) != d.desired_replicas:
            return _Scaled(events=(EventSpec("Normal", Reason.WOULD_SCALE, text),))
        return _Scaled()
    if failed_down is not None and spec.gpu_budget is not None and d.desired_replicas > d.current_replicas:
        message = f"{role}: scale-up to {d.desired_replicas} not written, since {failed_down}"
        return _Scaled(
            events=(EventSpec("Warning", Reason.SCALE_FAILED, message),),
            conditions=(ConditionUpdate(ConditionType.SCALING_ACTIVE, "False", Reason.SCALE_FAILED, message),),
        )
    target = spec.active_pools()[role].scale_target_ref
    try:
        written = await scale.write_scale(ctx.api, seen.namespace, target, d.desired_replicas)
    except scale.KubeError as err:
        down = d.desired_replicas < d.current_replicas
        return _Scaled(
            events=(EventSpec("Warning", Reason.SCALE_FAILED, f"{role}: {err}"),),
            conditions=(ConditionUpdate(ConditionType.SCALING_ACTIVE, "False", Reason.SCALE_FAILED, str(err)),),
            failed_down=f"the scale-down of {role} that makes room for it within gpuBudget failed" if down else None,
        )
    up = d.desired_replicas > d.current_replicas
    ctx.metrics.scaling_actions.labels(seen.namespace, seen.name, role, "up" if up else "down").inc()
    logger.info("scaled %s %d->%d reason=%s", role, d.current_replicas, d.desired_replicas, d.reason)
    event = EventSpec("Normal", Reason.SCALED_UP if up else Reason.SCALED_DOWN, text)
    return _Scaled(events=(event,), scaled_to=written.replicas)


async def _explain(
    ctx: OperatorContext,
    seen: _Seen,
    spec: api.InferencePoolSpec,
    previous: api.InferencePoolStatus | None,
    reads: Reads,
    decision: Decision,
    acted: _Acted,
    now_s: float,
    started: float,
) -> CycleOutcome:
    """Write the status (when it changed), export the metrics, and add the Event for a decision held for data."""
    dry_run = spec.dry_run or ctx.config.dry_run
    recorded = record(
        spec, previous, seen.generation, reads, decision, acted.scaled_to, acted.conditions, dry_run, now_s
    )
    decision, new_status = recorded.decision, recorded.status
    wrote = await _write_if_changed(ctx, seen, new_status)
    _export(ctx.metrics, seen.namespace, seen.name, spec, reads.observation, decision, recorded.facts, new_status)
    ctx.metrics.reconcile_seconds.labels(seen.namespace, seen.name).observe(time.monotonic() - started)
    events = acted.events
    if decision.held and _reason_changed(previous, ConditionType.METRICS_AVAILABLE, new_status):
        events += (EventSpec("Warning", Reason.METRICS_MISSING, decision.reason),)
    return CycleOutcome(events, spec.interval.seconds, wrote, decision)


def write_order(pools: Mapping[Role, plan_mod.PoolDecision]) -> list[Role]:
    """The roles in the order their `/scale` is written: scale-downs first.

    A pool's two targets are written one after the other, so a rebalance under `gpuBudget` (prefill
    up, decode down) written in role order holds both the new prefill and the old decode replicas for
    a moment: over the budget (found writing the chaos soak's budget check, issue 13). Freeing GPUs first
    never does.
    """
    return sorted(pools, key=lambda role: pools[role].desired_replicas > pools[role].current_replicas)


def room_gpus(cap: capacity.GpuCapacity, replicas: int, gpus_per_replica: int) -> int:
    """GPUs of a node group a scale-up may still take: free, less what Pending pods ask for, less the
    GPUs of the target's replicas whose pods the pod list does not show yet.

    The pod list is a snapshot up to `capacity.SNAPSHOT_MAX_AGE_S` old, and a workload controller
    makes pods a moment after its replicas change: a target created or scaled up just before (by us,
    or by someone else) would otherwise read as free room, and be scaled past the group (issue 13's
    soak). Replicas are counted at least once, never twice: their pods in the list count already.
    """
    unseen = 0 if cap.own_gpus is None else max(0, replicas * gpus_per_replica - cap.own_gpus)
    return cap.free_gpus - cap.pending_gpus - unseen


def first_delay_s(body: Mapping[str, Any]) -> float:
    """How long a pool's daemon waits before its first cycle: a fixed fraction of its interval.

    The fraction comes from the pool's uid, so the cycles of many pools spread evenly over the
    interval instead of all hitting the apiserver and Prometheus at once when the operator starts
    (bench/bench_operator.py), and a restarted operator keeps the same phases.
    """
    uid = str(body.get("metadata", {}).get("uid", ""))
    try:
        interval_s = api.parse_duration_s(str((body.get("spec") or {}).get("interval", "30s")))
    except ValueError:
        return 0.0
    return (zlib.crc32(uid.encode()) / 2**32) * interval_s


@dataclass(frozen=True)
class _Seen:
    """The pool as the cycle found it: kopf's live view of the object when the cycle started."""

    namespace: str
    name: str
    resource_version: str
    generation: int | None
    status_document: Mapping[str, Any]
    status: api.InferencePoolStatus | None  # None: no status yet, or one this version cannot read

    @classmethod
    def of(cls, namespace: str, name: str, body: Mapping[str, Any]) -> _Seen:
        metadata = body.get("metadata") or {}
        document = dict(body.get("status") or {})
        return cls(
            namespace,
            name,
            str(metadata.get("resourceVersion") or ""),
            metadata.get("generation"),
            document,
            _previous_status(document),
        )


def _previous_status(document: Mapping[str, Any]) -> api.InferencePoolStatus | None:
    if not document:
        return None
    try:
        return api.InferencePoolStatus.model_validate(document)
    except ValidationError:
        return None  # a status from an older schema: start afresh, as after a restart without history


def _desired_before(previous: api.InferencePoolStatus | None, role: Role) -> int | None:
    pool = previous.pools.get(role) if previous else None
    return pool.desired_replicas if pool else None


def _reason_changed(
    previous: api.InferencePoolStatus | None, ctype: ConditionType, new: api.InferencePoolStatus
) -> bool:
    def reason(s: api.InferencePoolStatus | None) -> str | None:
        return next((c.reason for c in s.conditions if c.type == ctype), None) if s else None

    return reason(previous) != reason(new)


async def _conditions_only(
    ctx: OperatorContext, seen: _Seen, updates: list[ConditionUpdate], now_s: float, next_in_s: float
) -> CycleOutcome:
    """A cycle that cannot plan: set conditions (an Event when one changes), hold replicas."""
    new_status = st.condition_only_status(seen.status, seen.generation, updates, now_s)
    wrote = await _write_if_changed(ctx, seen, new_status)
    events = tuple(
        EventSpec("Normal" if u.reason == Reason.PAUSED else "Warning", u.reason, u.message)
        for u in updates[:1]
        if _reason_changed(seen.status, u.type, new_status)
    )
    ctx.metrics.set_conditions(seen.namespace, seen.name, [(c.type, c.status) for c in new_status.conditions])
    return CycleOutcome(events, next_in_s, wrote)


async def _write_if_changed(ctx: OperatorContext, seen: _Seen, new: api.InferencePoolStatus) -> bool:
    """Write the status when something a user or the next cycle needs changed (`status.needs_write`)."""
    document = st.status_document(new)
    key = (seen.namespace, seen.name)
    ctx.statuses[key] = (seen.status_document, new)  # unwritten: the next cycle extends the stored one
    if not st.needs_write(document, seen.status_document, new_time_s(new)):
        return False
    try:
        wrote = await pools.write_status(ctx.api, seen.namespace, seen.name, document, seen.resource_version)
    except scale.KubeError as err:
        # The decision stands (and was acted on); the status is rewritten next cycle, as it still differs.
        ctx.metrics.cycle_errors.labels(seen.namespace, seen.name, err.reason).inc()
        logging.getLogger(__name__).warning("status write failed for %s/%s: %s", seen.namespace, seen.name, err)
        return False
    if wrote:
        ctx.statuses[key] = (document, new)
    return wrote


def new_time_s(status: api.InferencePoolStatus) -> float | None:
    """When a status was decided (its lastDecision time), None for one that never planned."""
    return st.epoch_s(status.last_decision.time) if status.last_decision else None


async def _read_scales(ctx: OperatorContext, namespace: str, spec: api.InferencePoolSpec) -> dict[Role, Any]:
    roles = list(spec.active_pools().items())
    states = await asyncio.gather(*(scale.read_scale(ctx.api, namespace, p.scale_target_ref) for _, p in roles))
    return {role: s for (role, _), s in zip(roles, states, strict=True)}


async def _read_targets(
    ctx: OperatorContext, namespace: str, spec: api.InferencePoolSpec
) -> tuple[dict[Role, Any], dict[Role, Any]]:
    """The targets' `/scale`, then their node groups' capacity (counting each target's own pods)."""
    scales = await _read_scales(ctx, namespace, spec)
    return scales, await _read_capacities(ctx, namespace, spec, scales)


async def _read_capacities(
    ctx: OperatorContext, namespace: str, spec: api.InferencePoolSpec, scales: Mapping[Role, scale.ScaleState]
) -> dict[Role, Any]:
    groups = [(role, p.node_group) for role, p in spec.active_pools().items() if p.node_group is not None]
    namespaces = ctx.config.namespaces
    found = await asyncio.gather(
        *(
            capacity.node_group_capacity(
                ctx.api, g, namespaces=namespaces, own_namespace=namespace, own_selector=scales[role].selector
            )
            for role, g in groups
            if g is not None
        )
    )
    return {role: c for (role, _), c in zip(groups, found, strict=True)}


async def _observe(
    ctx: OperatorContext, namespace: str, spec: api.InferencePoolSpec, now_s: float
) -> ObservationResult:
    """The pool's metrics, with the credentials its Secrets hold; replicas are the caller's to add."""
    credentials = await _credentials(ctx, namespace, spec)
    # No URL anywhere: the client answers every query "unreachable" with how to set one, so the
    # planner holds with MetricsAvailable=False like for any Prometheus it cannot read.
    url = spec.metrics.prometheus.url or ctx.config.default_prometheus_url or ""
    client = ctx.prometheus.get(url, spec.metrics.prometheus.timeout.seconds, credentials)
    return await observe(spec, client, now_s)


async def _credentials(ctx: OperatorContext, namespace: str, spec: api.InferencePoolSpec) -> Credentials:
    source = spec.metrics.prometheus
    auth, tls = source.auth, source.tls

    async def secret(ref: api.SecretKeyRef | None) -> str | None:
        return None if ref is None else await pools.read_secret_key(ctx.api, namespace, ref)

    token, user, password, ca = await asyncio.gather(
        secret(auth.bearer_token_secret_ref if auth else None),
        secret(auth.username_secret_ref if auth else None),
        secret(auth.password_secret_ref if auth else None),
        secret(tls.ca_secret_ref if tls else None),
    )
    return Credentials(token, user, password, ca, bool(tls and tls.insecure_skip_verify))


async def _profiles(ctx: OperatorContext, namespace: str, spec: api.InferencePoolSpec) -> dict[Role, Any]:
    out: dict[Role, api.PerformanceProfile] = {}
    for role, pool in spec.active_pools().items():
        ref = pool.performance.config_map_ref if pool.performance else None
        if ref is None:
            continue
        text = await pools.read_configmap_key(ctx.api, namespace, ref)
        try:
            out[role] = api.PerformanceProfile.model_validate(yaml.safe_load(text))
        except (yaml.YAMLError, ValidationError) as err:
            raise pools.MissingReference(
                Reason.INVALID_PROFILE,
                f"ConfigMap {namespace}/{ref.name} key {ref.key} is not a PerformanceProfile: {err}",
            ) from None
    return out


def _export(
    m: OperatorMetrics,
    namespace: str,
    name: str,
    spec: api.InferencePoolSpec,
    observation: Observation,
    decision: Decision,
    facts: Mapping[Role, st.PoolFacts],
    status: api.InferencePoolStatus,
) -> None:
    for role, d in decision.pools.items():
        f = facts[role]
        m.desired.labels(namespace, name, role).set(d.desired_replicas)
        m.current.labels(namespace, name, role).set(f.scaled_to if f.scaled_to is not None else f.current_replicas)
        m.ready.labels(namespace, name, role).set(f.ready_replicas)
        m.gpus.labels(namespace, name, role).set(d.gpus)
    ttft = [d.predicted_ttft_s for d in decision.pools.values() if d.predicted_ttft_s is not None]
    tpot = [d.predicted_tpot_s for d in decision.pools.values() if d.predicted_tpot_s is not None]
    pairs = (
        (m.predicted_ttft, max(ttft) if ttft else None),
        (m.predicted_tpot, max(tpot) if tpot else None),
        (m.observed_ttft, observation.ttft_quantile_s),
        (m.observed_tpot, observation.tpot_quantile_s),
        (m.objective_ttft, spec.objectives.ttft.target.seconds),
        (m.objective_tpot, spec.objectives.tpot.target.seconds),
        (m.rate, observation.request_rate_per_s),
        (m.forecast_rate, decision.planned.load.rate_per_s if decision.planned else None),
    )
    for gauge, value in pairs:
        if value is None:
            gauge.labels(namespace, name).set(float("nan"))
        else:
            gauge.labels(namespace, name).set(value)
    m.set_conditions(namespace, name, [(c.type, c.status) for c in status.conditions])
