"""The decision path is one: the operator, `tokenscale plan` and the simulator decide alike on the same inputs.

For every pool in examples/, the simulator replays a short diurnal trace (with cold starts) under its
tokenscale policy. Each cycle's observation is written to a recorded-observation file and read back,
and that one observation goes to:

- the operator's pure decision path, `reconcile.decide` then `reconcile.record` (its status read back
  from the stored document next cycle, as the operator reads it; every write succeeding, as the
  simulator's do);
- `tokenscale plan -f <example> --observation <file> -o json`, the CLI's own code in-process;
- the simulator's `TokenscalePolicy.decision`, its state threaded from cycle to cycle.

`plan` keeps no state, so it is held to the operator's and the simulator's first decision on the same
observation (a fresh status, a fresh state); the operator and the simulator are then held to each
other with their state carried across the replay. Equal means the whole `plan -o json` document:
replicas, reasons, messages, predictions, the planned load and horizon, the conditions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tokenscale import api, cli, manifests, reconcile, report
from tokenscale import status as st
from tokenscale.api import InferencePoolSpec, Role
from tokenscale.kube import scale
from tokenscale.planner import plan as planner
from tokenscale.planner import profiles, sizing
from tokenscale.planner.observation import Observation
from tokenscale.planner.perf import ReplicaPerformance
from tokenscale.planner.reasons import Reason
from tokenscale.sim import loop, policies
from tokenscale.sim.workload import synthetic_workload

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
DURATION_S = 1200.0
COLD_START_S = 75.0
PEAK_TO_BASE = 6.0


def _json(decision: planner.Decision) -> Any:
    """The decision as `plan -o json` prints it, through JSON (so every path compares the same way)."""
    return json.loads(json.dumps(report.decision_json(decision)))


def _reads(observation: Observation) -> reconcile.Reads:
    """What the operator's read step gives for an observation: `/scale` with its replicas, no node groups."""
    scales = {
        role: scale.ScaleState(c.current, c.current, "app=pool", c.ready, True, "1")
        for role, c in observation.replicas.items()
    }
    return reconcile.Reads(scales, {}, {}, observation)


@dataclass
class _Lockstep:
    """The simulator's tokenscale policy, deciding in lockstep with the operator and the CLI on each view."""

    spec: InferencePoolSpec
    example: Path
    workdir: Path
    capsys: pytest.CaptureFixture[str]
    inner: policies.TokenscalePolicy
    name: str = "lockstep"
    cold_start: bool = True
    provisioned: bool = False
    previous: api.InferencePoolStatus | None = None  # the operator's status, as stored
    cycles: list[tuple[Any, Any, Any, Any, Any]] = field(default_factory=list)

    @property
    def interval_s(self) -> float:
        return self.inner.interval_s

    def metrics_window_s(self, spec: InferencePoolSpec) -> float:
        return self.inner.metrics_window_s(spec)

    def initial(self, spec: InferencePoolSpec) -> tuple[dict[Role, int], planner.PlannerState]:
        return self.inner.initial(spec)

    def decide(
        self, now_s: float, view: policies.ControlView, state: planner.PlannerState
    ) -> tuple[dict[Role, int], planner.PlannerState]:
        observation = self._recorded(view.observation)
        view = replace(view, observation=observation)
        printed = self._plan_cli()
        fresh_operator = reconcile.decide(self.spec, None, _reads(observation), now_s)
        fresh_simulator = self.inner.decision(now_s, view, planner.PlannerState())

        reads = _reads(observation)
        decided = reconcile.decide(self.spec, self.previous, reads, now_s)
        written = {r: d.desired_replicas if d.changed else None for r, d in decided.pools.items()}
        recorded = reconcile.record(self.spec, self.previous, 1, reads, decided, written, [], False, now_s)
        self.previous = api.InferencePoolStatus.model_validate(st.status_document(recorded.status))
        simulated = self.inner.decision(now_s, view, state)

        self.cycles.append(
            (printed, _json(fresh_operator), _json(fresh_simulator), _json(recorded.decision), _json(simulated))
        )
        return {r: d.desired_replicas for r, d in simulated.pools.items()}, simulated.state

    def _recorded(self, observation: Observation) -> Observation:
        """The observation written as `plan --observation` reads it, and read back."""
        path = self.workdir / f"observation-{len(self.cycles)}.yaml"
        recorded = manifests.RecordedObservation.from_observation(observation)
        path.write_text(yaml.safe_dump(recorded.model_dump(by_alias=True, exclude_none=True, mode="json")))
        return manifests.load_observation(path)

    def _plan_cli(self) -> Any:
        path = self.workdir / f"observation-{len(self.cycles)}.yaml"
        self.capsys.readouterr()
        code = cli.main(["plan", "-f", str(self.example), "--observation", str(path), "-o", "json"])
        captured = self.capsys.readouterr()
        assert code == 0, captured.err
        return json.loads(captured.out)


def _base_rate(spec: InferencePoolSpec, perf: Mapping[Role, ReplicaPerformance]) -> float:
    """A calm rate whose peak (× PEAK_TO_BASE) needs at least three replicas of the serving pool."""
    serving = api.serving_role(spec.mode)
    for rate in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0):
        peak = sizing.Load(rate * PEAK_TO_BASE, 1000.0, 250.0, 2.25, 1.0, 1.0)
        if policies.size_for(spec, peak, perf)[serving] >= 3:
            return rate
    raise AssertionError(f"no rate up to 32 req/s needs three {serving} replicas")


def _replay(example: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[InferencePoolSpec, _Lockstep]:
    spec = manifests.load_one_pool(example).pool.spec
    perf = profiles.resolve_all(spec)
    rng = np.random.default_rng(11)
    w = synthetic_workload(rng, DURATION_S, _base_rate(spec, perf), shape="diurnal", peak_to_base=PEAK_TO_BASE)
    setup = loop.SimSetup(spec, w, perf, perf, COLD_START_S, COLD_START_S * 0.1, seed=5)
    policy = _Lockstep(spec, example, tmp_path, capsys, policies.TokenscalePolicy(spec, perf))
    loop.run_policy(setup, policy, policy.metrics_window_s(spec))
    return spec, policy


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_operator_plan_cli_and_simulator_decide_alike(
    example: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, replay = _replay(example, tmp_path, capsys)
    assert len(replay.cycles) == DURATION_S // spec.interval.seconds
    for i, (printed, fresh_operator, fresh_simulator, operator, simulator) in enumerate(replay.cycles):
        assert printed == fresh_operator, f"cycle {i}: `plan -o json` and the operator's first decision differ"
        assert printed == fresh_simulator, f"cycle {i}: `plan -o json` and the simulator's first decision differ"
        assert operator == simulator, f"cycle {i}: the operator and the simulator differ with their state carried"

    # The replay exercised what the paths could differ on: scaling both ways, and a measured cold start.
    reasons = {pool["reason"] for *_, simulated in replay.cycles for pool in _pools(simulated)}
    assert Reason.SCALED_UP in reasons
    assert reasons & {Reason.SCALED_DOWN, Reason.STABILIZING, Reason.SURVIVORS_TOO_SLOW}
    horizons = {simulated["planned_load"]["horizon_s"] for *_, simulated in replay.cycles if simulated["planned_load"]}
    assert horizons - {spec.forecast.cold_start.seconds}, "no cold start was measured in the replay"


def _pools(printed: dict[str, Any]) -> list[dict[str, Any]]:
    return [printed[role] for role in api.ROLES if role in printed]
