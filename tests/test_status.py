"""The status round trip: a decision written to status and read back gives the planner the same state,
so an operator restarted between two cycles makes the decision the old one would have made."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokenscale import api
from tokenscale import status as st
from tokenscale.planner import backlog, profiles
from tokenscale.planner import plan as planner
from tokenscale.planner.observation import Observation, ReplicaCounts
from tokenscale.planner.plan import ConditionUpdate
from tokenscale.planner.reasons import ConditionType, Reason

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_790_000_000.0  # whole seconds: status times are RFC 3339 to the second


def _spec(**changes: Any) -> api.InferencePoolSpec:
    doc = yaml.safe_load((ROOT / "examples" / "vllm-disaggregated-70b.yaml").read_text().split("\n---")[0])
    spec = copy.deepcopy(doc["spec"])
    spec.update(changes)
    return api.InferencePoolSpec.model_validate(spec)


def _obs(t: float, rate: float, prefill: int, decode: int) -> Observation:
    return Observation(
        time_s=t,
        request_rate_per_s=rate,
        isl_mean_tokens=2000.0,
        osl_mean_tokens=300.0,
        replicas={"prefill": ReplicaCounts(prefill, prefill), "decode": ReplicaCounts(decode, decode)},
        ttft_quantile_s=0.4,
        tpot_quantile_s=0.045,
        itl_mean_s=0.03,
        prefill_time_mean_s=0.2,
    )


def _through_status(spec: api.InferencePoolSpec, decision: planner.Decision, obs: Observation) -> planner.PlannerState:
    facts = {r: st.PoolFacts(d.current_replicas, d.current_replicas) for r, d in decision.pools.items()}
    written = st.decided_status(spec, None, 1, obs, decision, facts, [], False, obs.time_s)
    document = st.status_document(written)
    return st.planner_state(api.InferencePoolStatus.model_validate(document))


@pytest.mark.parametrize(
    "rates",
    [
        pytest.param((5.0, 40.0, 40.0, 2.0, 2.0, 2.0), id="up-then-down-through-stabilization"),
        pytest.param((20.0, 25.0, 30.0, 35.0, 40.0), id="rising-trend"),
    ],
)
def test_a_restart_between_cycles_changes_no_decision(rates: tuple[float, ...]) -> None:
    spec = _spec()
    perf = profiles.resolve_all(spec)
    live = planner.PlannerState()  # the operator that never restarts
    restarted = planner.PlannerState()  # the one that reads its state back from status every cycle
    counts = {"prefill": 1, "decode": 2}
    for i, rate in enumerate(rates):
        t = T0 + 30.0 * i
        obs = _obs(t, rate, counts["prefill"], counts["decode"])
        a = planner.plan(spec, obs, live, t, perf)
        b = planner.plan(spec, obs, restarted, t, perf)
        counts_a = {r: d.desired_replicas for r, d in a.pools.items()}
        assert counts_a == {r: d.desired_replicas for r, d in b.pools.items()}
        assert a.reason == b.reason
        live = a.state
        restarted = _through_status(spec, b, obs)
        counts = {r: d.desired_replicas for r, d in a.pools.items()}


def test_a_replica_seen_starting_survives_a_restart() -> None:
    # The tail fit waits a metrics window after the last cycle that saw a replica starting; an
    # operator restarted within that window must still know it.
    spec = _spec()
    obs = _obs(T0, 5.0, 2, 2)
    obs = Observation(**{**obs.__dict__, "replicas": {"prefill": ReplicaCounts(3, 2), "decode": ReplicaCounts(2, 2)}})
    decision = planner.plan(spec, obs, planner.PlannerState(), T0, profiles.resolve_all(spec))
    assert decision.state.starting_seen_s == {"prefill": T0}
    assert _through_status(spec, decision, obs).starting_seen_s == {"prefill": T0}


def test_the_queue_a_growth_is_read_against_survives_a_restart() -> None:
    # The backlog step reads the queue's growth since the last cycle; a restarted operator reads the
    # same growth, so it drains the same backlog.
    spec = _spec()
    perf = profiles.resolve_all(spec)
    first = replace(_obs(T0, 4.0, 2, 2), waiting_requests={"prefill": 100.0, "decode": 0.0})
    decision = planner.plan(spec, first, planner.PlannerState(), T0, perf)
    restored = _through_status(spec, decision, first)
    assert (
        restored.queues
        == decision.state.queues
        == {
            "prefill": backlog.QueueSample(T0, 100.0),
            "decode": backlog.QueueSample(T0, 0.0),
        }
    )
    grown = replace(_obs(T0 + 30.0, 4.0, 2, 2), waiting_requests={"prefill": 400.0, "decode": 0.0})
    live = planner.plan(spec, grown, decision.state, grown.time_s, perf)
    after_restart = planner.plan(spec, grown, restored, grown.time_s, perf)
    assert live.pools["prefill"].binding == "backlog"
    assert {r: d.desired_replicas for r, d in after_restart.pools.items()} == {
        r: d.desired_replicas for r, d in live.pools.items()
    }


@pytest.mark.parametrize("stored", [-3.0, float("nan"), float("inf")])
def test_a_queue_sample_no_queue_could_be_is_read_back_as_none(stored: float) -> None:
    spec = _spec()
    obs = replace(_obs(T0, 4.0, 2, 2), waiting_requests={"prefill": 100.0, "decode": 0.0})
    decision = planner.plan(spec, obs, planner.PlannerState(), T0, profiles.resolve_all(spec))
    facts = {r: st.PoolFacts(d.current_replicas, d.current_replicas) for r, d in decision.pools.items()}
    document = st.status_document(st.decided_status(spec, None, 1, obs, decision, facts, [], False, T0))
    document["pools"]["prefill"]["waitingRequests"] = stored
    restored = st.planner_state(api.InferencePoolStatus.model_validate(document))
    assert restored.queues == {"decode": backlog.QueueSample(T0, 0.0)}


def test_the_rate_spread_of_the_last_hour_survives_a_restart() -> None:
    # Bursts that recur are sized for from the hour's median spread; a restarted operator keeps it.
    spec = _spec()
    perf = profiles.resolve_all(spec)
    state = planner.PlannerState()
    for i in range(12):
        obs = replace(_obs(T0 + 30.0 * i, 10.0, 2, 2), arrival_cv2=46.0, dispersion_bin_s=15.0)
        decision = planner.plan(spec, obs, state, obs.time_s, perf)
        state = _through_status(spec, decision, obs)
    assert state.modulation == decision.state.modulation and len(state.modulation.history) == 24
    calm = replace(_obs(T0 + 360.0, 10.0, 2, 2), arrival_cv2=1.0, dispersion_bin_s=15.0)
    after = planner.plan(spec, calm, state, calm.time_s, perf)
    assert after.planned is not None and after.planned.load.rate_cv2 == pytest.approx(0.3)


def test_conditions_keep_their_transition_time_until_the_status_changes() -> None:
    first = st.merge_conditions([], [ConditionUpdate(ConditionType.READY, "True", Reason.ACTIVE, "ok")], T0)
    same = st.merge_conditions(
        first, [ConditionUpdate(ConditionType.READY, "True", Reason.ACTIVE, "still ok")], T0 + 60
    )
    flipped = st.merge_conditions(
        same, [ConditionUpdate(ConditionType.READY, "False", Reason.TARGET_NOT_FOUND, "gone")], T0 + 120
    )
    assert first[0].last_transition_time == same[0].last_transition_time == st.rfc3339(T0)
    assert same[0].message == "still ok"
    assert flipped[0].last_transition_time == st.rfc3339(T0 + 120)


def test_summary_columns_read_like_kubectl_expects() -> None:
    spec = _spec()
    obs = _obs(T0, 10.0, 1, 2)
    decision = planner.plan(spec, obs, planner.PlannerState(), T0, profiles.resolve_all(spec))
    facts = {r: st.PoolFacts(d.current_replicas, 0) for r, d in decision.pools.items()}
    written = st.decided_status(spec, None, 3, obs, decision, facts, [], False, T0)
    assert written.summary.ttft == "400ms/600ms" and written.summary.tpot == "45ms/50ms"
    assert written.summary.prefill == f"1/{decision.pools['prefill'].desired_replicas}"
    assert written.summary.gpus == decision.total_gpus
    assert written.observed_generation == 3


def test_the_clock_alone_does_not_make_a_status_different() -> None:
    doc = {"lastDecision": {"time": "a"}, "observation": {"time": "a", "requestRatePerSecond": 1.0}}
    later = {"lastDecision": {"time": "b"}, "observation": {"time": "b", "requestRatePerSecond": 1.0}}
    changed = {"lastDecision": {"time": "b"}, "observation": {"time": "b", "requestRatePerSecond": 2.0}}
    assert st.comparable(doc) == st.comparable(later)
    assert st.comparable(doc) != st.comparable(changed)


def _cycles(rates: list[float], start_s: float = T0, interval_s: float = 30.0) -> list[dict[str, Any]]:
    """Status documents of consecutive cycles of one pool that follows its own decisions."""
    spec = _spec()
    perf = profiles.resolve_all(spec)
    state, previous = planner.PlannerState(), None
    counts = {"prefill": 2, "decode": 4}
    documents = []
    for i, rate in enumerate(rates):
        t = start_s + interval_s * i
        obs = _obs(t, rate * (1 + 1e-3 * (i % 3)), counts["prefill"], counts["decode"])  # measured: never equal
        decision = planner.plan(spec, obs, state, t, perf)
        facts = {r: st.PoolFacts(counts[r], counts[r]) for r in decision.pools}
        previous = st.decided_status(spec, previous, 1, obs, decision, facts, [], False, t)
        documents.append(st.status_document(previous))
        state = decision.state
        counts = {r: d.desired_replicas for r, d in decision.pools.items()}
    return documents


def _changed(documents: list[dict[str, Any]]) -> list[int]:
    """Cycles whose replica counts or recommendations differ from the cycle before (and the first)."""

    def material(document: dict[str, Any]) -> tuple[object, ...]:
        pools = {r: (p["currentReplicas"], p["desiredReplicas"]) for r, p in document["pools"].items()}
        return pools, document["recommendations"]

    return [i for i in range(len(documents)) if i == 0 or material(documents[i]) != material(documents[i - 1])]


def _writes(documents: list[dict[str, Any]]) -> list[int]:
    """Which cycles write, the stored status being the last one written."""
    stored: dict[str, Any] | None = None
    written = []
    for i, document in enumerate(documents):
        if st.needs_write(document, stored, st.epoch_s(document["lastDecision"]["time"])):
            stored = document
            written.append(i)
    return written


def test_a_settled_pool_writes_its_status_once_per_refresh_not_every_cycle() -> None:
    # 22 minutes at 30 s, the load measured a little differently each time: the pool scales prefill
    # up at once and decode down after the 5-minute window, then settles (from cycle 12 on).
    documents = _cycles([6.0] * 45)
    # Every cycle that decided a change, or saw the replicas a change made, is written.
    changed = _changed(documents)
    assert len(changed) >= 3 and set(changed) <= set(_writes(documents))
    settled = documents[15:]
    # The first cycle seen; then only the refreshes of the measured values every STATUS_REFRESH_S
    # (300 s = 10 cycles): 3 writes in 30 cycles instead of 30.
    assert _writes(settled) == [0, 10, 20]
    assert all(document["recommendations"] == settled[0]["recommendations"] for document in settled)
    assert len({document["observation"]["requestRatePerSecond"] for document in settled}) > 1


def test_a_change_a_user_or_the_next_cycle_needs_is_written_the_cycle_it_happens() -> None:
    documents = _cycles([6.0] * 15 + [60.0] * 4)[12:]  # settled, then ten times the load
    # The scale-up (a new recommendation, new desired replicas), then the replicas it made ready:
    # written in the cycles they happen, and nothing else within the refresh period.
    assert documents[3]["recommendations"] != documents[2]["recommendations"]
    assert _writes(documents) == _changed(documents) and 3 in _changed(documents)


@pytest.mark.parametrize(
    ("change", "material"),
    [
        pytest.param(lambda d: d["observation"].update(requestRatePerSecond=99.0), False, id="measured-rate"),
        pytest.param(lambda d: d["forecast"].update(state=[1.0, 2.0]), False, id="forecaster-state"),
        pytest.param(lambda d: d["conditions"][0].update(message="other figures"), False, id="condition-message"),
        pytest.param(lambda d: d["summary"].update(ttft="1ms/600ms"), False, id="observed-ttft-column"),
        pytest.param(
            lambda d: d["pools"]["decode"].update(startingSeenTime="2026-12-07T09:16:45Z"), False, id="starting-seen"
        ),
        pytest.param(lambda d: d["conditions"][0].update(reason="Other"), True, id="condition-reason"),
        pytest.param(lambda d: d["pools"]["decode"].update(desiredReplicas=9), True, id="desired-replicas"),
        pytest.param(lambda d: d["recommendations"].append({"time": T0 + 1, "decode": 9}), True, id="recommendation"),
        pytest.param(lambda d: d["observation"].update(notes=["request_rate stale: old"]), True, id="data-note-kind"),
        pytest.param(
            lambda d: d["observation"].update(notes=["ttft_quantile too-few-samples: 3 samples"]),
            False,
            id="precision-caveat",
        ),  # fmt: skip
        pytest.param(lambda d: d["lastDecision"].update(dryRun=True), True, id="dry-run"),
    ],
)
def test_what_is_material_in_a_status(change: Any, material: bool) -> None:
    (document,) = _cycles([6.0])
    edited = copy.deepcopy(document)
    change(edited)
    assert (st.material(edited) != st.material(document)) is material
    assert st.needs_write(edited, document, st.epoch_s(document["lastDecision"]["time"])) is material
