"""A chaos soak (issue 13): the real operator, apiserver, Prometheus and simulated fleet under faults.

`run_soak` creates N InferencePools (each with its two Deployments, a GPU budget and a node group
per role backed by a Node object whose allocatable GPUs the soak sets), points them at a proxy in
front of the fleet's real Prometheus, starts `tokenscale run`, and then injects one fault at a time,
in a seeded order that covers every kind each round:

- `apiserver-restart`: kube-apiserver SIGKILLed and started again on the same port and etcd;
- `prometheus-restart`: Prometheus stopped, left down a while, started on the same data;
- `garbage`: the proxy answers garbage (an HTML 502, duplicated series, +Inf values) for a while;
- `target-recreate`: some pools' Deployments deleted, then created again at minReplicas;
- `capacity-change`: some node groups' allocatable GPUs changed;
- `scale-race`: a second writer replaces `/scale` of some pools, read-modify-write, for two intervals;
- `operator-kill`: the operator SIGKILLed and started again (as its Deployment would).

Meanwhile the fleet's load follows a slow cosine from its peak, so the planner always has reasons to
scale (and the budget binds), and an observer thread checks invariants every second from outside
(the apiserver's objects and the operator's /metrics); a watch on the Deployments checks bounds and
budget again at every replicas change, between the rounds:

- `bounds`: every target's replicas within [minReplicas, maxReplicas];
- `gpu-budget`: a pool's replicas × gpusPerReplica within gpuBudget, except within two intervals
  of the racer writing that pool (a concurrent writer can break it; the operator must repair it);
- `no-scale-on-bad-data`: no replicas change while Prometheus is down or answers garbage (from a
  grace after the fault starts, for cycles that read good data just before, until it ends);
- `node-group`: a scale-up the operator made (not the racer or the soak) never takes a role past
  its node group's allocatable GPUs: the operator limits scale-ups to the group's free GPUs, less
  what Pending pods ask for, and every replica's pod here is Pending (no kubelet), so that room is
  allocatable − replicas × gpusPerReplica. A grace after a capacity change covers the operator's
  node and pod snapshot (`kube.capacity.SNAPSHOT_MAX_AGE_S`) and one cycle;
- `recovery`: after a fault clears, every pool makes a fresh decision (one not held for missing
  metrics: `tokenscale_decisions_total` with a binding other than `metrics`) within two
  intervals; measured per pool, reported as p50/p99, checked with the observer's 1 s resolution;
- `crash`: the operator never exits unless the soak killed it (no crash loop).

A fault "clears" when the world is healthy again as seen from outside: the apiserver answers
/readyz, Prometheus answers the pools' load series over their window again, the proxy passes
answers through, the targets exist, the racer stopped, the new operator answers /healthz.
Used by bench/bench_soak.py (10 minutes, 50 pools) and tests/e2e/test_soak.py (shorter, in CI).
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes.watch
import urllib3
from kubernetes.client.exceptions import ApiException

from harness.cluster import Cluster
from harness.operator_env import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorProcess,
    SimulatedFleet,
    deployment_manifest,
    pool_manifest,
)
from harness.processes import Supervisor
from harness.prometheus import PrometheusFactory
from harness.textserver import answer
from harness.wait import wait_until
from tokenscale.kube.capacity import SNAPSHOT_MAX_AGE_S

FAULT_KINDS = (
    "apiserver-restart",
    "prometheus-restart",
    "garbage",
    "target-recreate",
    "capacity-change",
    "scale-race",
    "operator-kill",
)
ROLES = ("prefill", "decode")
GPU = "nvidia.com/gpu"
GROUP_KEY = "soak.tokenscale.dev/group"
GPUS_PER_REPLICA = 4  # operator_env.POOL_SPEC, both roles
BOUNDS = {"prefill": (1, 8), "decode": (1, 16)}  # (minReplicas, maxReplicas) of operator_env.POOL_SPEC
GPU_BUDGET = 20  # 5 replicas of 4 GPUs for both roles: binds from about half the peak load (5 prefill + 2 decode)
INITIAL_ALLOCATABLE = {"prefill": 24, "decode": 40}  # GPUs of each node group at the start
ALLOCATABLE_CHOICES = (8, 16, 24, 32, 40, 64)  # what a capacity change sets
RATE_LOW, RATE_HIGH, RATE_PERIOD_S = 4.0, 40.0, 240.0  # the fleet's load: a cosine between these
WINDOW_S = 10.0  # spec.metrics.window of operator_env.POOL_SPEC
OBSERVE_EVERY_S = 1.0
LIST_TIMEOUT_S = 5.0  # the observer's list of Deployments
WATCH_TIMEOUT_S = 10  # the Deployment watch is renewed this often (so it ends soon after the soak)
DATA_GRACE_S = 5.0  # a cycle that read good data just before a data fault may still write after it starts
PROMETHEUS_DOWN_S = 10.0
APISERVER_DOWN_S = 3.0
TARGET_GONE_S = 5.0
FRACTION_TOUCHED = 0.2  # of the pools, by target-recreate, capacity-change and scale-race
_DECISION_LINE = re.compile(r"^tokenscale_decisions_total\{([^}]*)\} ([0-9.e+-]+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
_SCALED_LINE = re.compile(r" scaled \w+ \d+->\d+ reason=(\w+)")


@dataclass(frozen=True)
class SoakConfig:
    duration_s: float = 600.0
    pools: int = 50
    interval_s: float = 10.0  # spec.interval of every pool
    garbage_s: float = 60.0  # how long the proxy answers garbage
    seed: int = 1


@dataclass
class Fault:
    """One injected fault: what, when it started and cleared (monotonic), and each pool's recovery."""

    kind: str
    detail: str
    started: float
    data_fault: bool = False  # Prometheus down or garbage: no replicas may change meanwhile
    data_until: float | None = None  # when the data fault itself ended (Prometheus up, proxy honest)
    cleared: float | None = None
    baseline: dict[str, float] = field(default_factory=dict)  # fresh decisions per pool at the clear
    baseline_start: float | None = None  # the operator process those counts are from
    recovered_s: dict[str, float] = field(default_factory=dict)  # pool → seconds from clear to a fresh decision


@dataclass(frozen=True)
class Violation:
    at_s: float  # seconds since the soak started
    invariant: str
    subject: str
    detail: str


@dataclass
class SoakReport:
    config: SoakConfig
    elapsed_s: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    observations: int = 0  # observer rounds with a full view (every invariant checked on every pool)
    skipped_observations: int = 0  # rounds the apiserver did not answer (it was down)
    violations: list[Violation] = field(default_factory=list)
    unexpected_exits: int = 0
    operator_starts: int = 0
    racer_writes: int = 0
    watch_events: int = 0  # replicas changes the watch saw, each checked for bounds and budget at once
    racer_conflicts: int = 0
    operator_scale_changes: int = 0  # replicas changes the observer attributed to the operator
    tracebacks: int = 0
    events: dict[str, int] = field(default_factory=dict)  # the pools' Events by reason (their counts summed)
    scale_reasons: dict[str, int] = field(
        default_factory=dict
    )  # the operator's /scale writes by the step that set them

    def recoveries_by_kind(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for f in self.faults:
            out.setdefault(f.kind, []).extend(f.recovered_s.values())
        return out

    def lines(self) -> list[str]:
        c = self.config
        out = [
            f"chaos soak: {c.pools} pools, interval {c.interval_s:g} s, garbage {c.garbage_s:g} s, seed {c.seed}, "
            f"{self.elapsed_s:.0f} s",
            f"faults injected: {len(self.faults)}",
        ]
        by_kind = self.recoveries_by_kind()
        for kind in FAULT_KINDS:
            n = sum(1 for f in self.faults if f.kind == kind)
            times = by_kind.get(kind, [])
            figures = (
                f"recovery p50 {percentile(times, 50):5.1f} s  p99 {percentile(times, 99):5.1f} s  "
                f"max {max(times):5.1f} s  ({len(times)} pool recoveries)"
                if times
                else "no recoveries measured"
            )
            out.append(f"  {kind:20s} {n:3d}   {figures}")
        every = [t for ts in by_kind.values() for t in ts]
        if every:
            out.append(
                f"recovery over all faults: p50 {percentile(every, 50):.1f} s, p99 {percentile(every, 99):.1f} s, "
                f"max {max(every):.1f} s (bound: two intervals, {2 * c.interval_s:g} s, + {OBSERVE_EVERY_S:g} s "
                "observer resolution)"
            )
        out.append(
            f"invariant checks: {self.observations} observer rounds × {c.pools} pools "
            f"({self.skipped_observations} rounds while the apiserver was down); {self.watch_events} replicas "
            "changes checked the moment the watch saw them"
        )
        out.append(
            f"operator: {self.operator_starts} starts, {self.unexpected_exits} unexpected exits, "
            f"{self.tracebacks} tracebacks in its log; {self.operator_scale_changes} replicas changes by it"
        )
        out.append(f"racer: {self.racer_writes} /scale writes, {self.racer_conflicts} conflicts (409) it retried")
        out.append("the operator's Events by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(self.events.items())))
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.scale_reasons.items()))
        out.append(f"the operator's /scale writes by reason (its log): {reasons}")
        out.append(f"violations: {len(self.violations)}")
        for v in self.violations[:30]:
            out.append(f"  t={v.at_s:6.1f}s {v.invariant} {v.subject}: {v.detail}")
        return out


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Look:
    """One observer round: the targets' replicas now and at the last round (monotonic times), and what
    the soak itself did meanwhile."""

    now: float
    previous_at: float
    replicas: dict[str, int]  # target → spec.replicas; deleted targets absent
    previous: dict[str, int]
    data_fault: tuple[str, float, float | None] | None  # (kind, started, ended or None) of a data fault
    touched: dict[str, float] = field(default_factory=dict)  # target → last write by the racer or the soak
    racer_touched: dict[str, float] = field(default_factory=dict)  # pool → last racer write
    allocatable: dict[str, int] = field(default_factory=dict)  # target → its node group's GPUs
    allocatable_before: dict[str, int] = field(default_factory=dict)  # … before the last capacity change
    capacity_changed: float = -math.inf
    gone: frozenset[str] = frozenset()  # targets the soak deleted


def check(pools: list[str], interval_s: float, look: Look) -> tuple[list[tuple[str, str, str]], int]:
    """The invariants over one round: (invariant, subject, detail) of each violation, and how many
    replicas changes were the operator's (neither the racer nor the soak wrote the target since the
    last round; half a second more covers a write in flight when that round read)."""
    found: list[tuple[str, str, str]] = []
    changes = 0
    for pool in pools:
        total = 0
        for role in ROLES:
            target = f"{pool}-{role}"
            if target not in look.replicas:
                if target not in look.gone:
                    found.append(("target", target, "missing though the soak did not delete it"))
                continue
            n = look.replicas[target]
            total += n * GPUS_PER_REPLICA
            low, high = BOUNDS[role]
            if not low <= n <= high:
                found.append(("bounds", target, f"{n} replicas outside [{low}, {high}]"))
            old = look.previous.get(target)
            if old is None or old == n or look.touched.get(target, -math.inf) >= look.previous_at - 0.5:
                continue  # unchanged, new, or written by the racer or the soak since the last round
            changes += 1
            if look.data_fault is not None:
                kind, started, ended = look.data_fault
                # Only a change seen while the fault surely lasted: from a grace after it started (a
                # cycle that read good data just before), to its end (a round just after it is ambiguous).
                if look.previous_at >= started + DATA_GRACE_S and (ended is None or look.now <= ended):
                    found.append(("no-scale-on-bad-data", target, f"{old}→{n} during {kind}"))
            if n > old:
                limit = look.allocatable.get(target, 0)
                if look.now - look.capacity_changed <= interval_s + SNAPSHOT_MAX_AGE_S + 2 * OBSERVE_EVERY_S:
                    limit = max(limit, look.allocatable_before.get(target, limit))
                if n * GPUS_PER_REPLICA > limit:
                    found.append(
                        ("node-group", target, f"scaled up {old}→{n} ({n * GPUS_PER_REPLICA} GPUs) past {limit}")
                    )
        excused = look.now - look.racer_touched.get(pool, -math.inf) <= 2 * interval_s + OBSERVE_EVERY_S
        if total > GPU_BUDGET and not excused:
            found.append(("gpu-budget", pool, f"{total} GPUs over gpuBudget {GPU_BUDGET}"))
    return found, changes


# --- garbage and the proxy -----------------------------------------------------------------------


def _with_results(body: bytes, change: Callable[[list[Any]], list[Any]]) -> bytes:
    document = json.loads(body)
    result = document.get("data", {}).get("result")
    if isinstance(result, list):
        document["data"]["result"] = change(result)
    return json.dumps(document).encode()


GARBAGE: dict[str, Callable[[bytes], tuple[int, str, bytes]]] = {
    "html-error-page": lambda body: (502, "text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
    "duplicated-series": lambda body: (200, "application/json", _with_results(body, lambda r: r + r)),
    "infinite-values": lambda body: (
        200,
        "application/json",
        _with_results(body, lambda r: [{**s, "value": [s["value"][0], "+Inf"]} if "value" in s else s for s in r]),
    ),
}


class PrometheusProxy:
    """Forwards queries to the real Prometheus; `garbage` turns its answers into garbage.

    When Prometheus is down the connection is dropped without an answer, as a dead upstream is.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.garbage: Callable[[bytes], tuple[int, str, bytes]] | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._forward(None)

            def do_POST(self) -> None:  # noqa: N802
                self._forward(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def _forward(self, form: bytes | None) -> None:
                request = urllib.request.Request(proxy.upstream + self.path, data=form)
                if form is not None:
                    request.add_header("Content-Type", self.headers.get("Content-Type", ""))
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        status, kind, body = 200, "application/json", response.read()
                    garbage = proxy.garbage
                    if garbage is not None:
                        status, kind, body = garbage(body)
                except urllib.error.HTTPError as err:  # Prometheus' own error answers pass through
                    status, kind, body = err.code, "application/json", err.read()
                except OSError:
                    self.close_connection = True  # upstream down: no answer at all
                    return
                answer(self, status, kind, body)  # the operator may have given up (its query timeout)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="soak-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


# --- the world -----------------------------------------------------------------------------------


def pool_names(count: int) -> list[str]:
    return [f"p-{i:03d}" for i in range(count)]


def group_label(namespace: str, pool: str, role: str) -> str:
    return f"{namespace}.{pool}.{role}"


def node_name(namespace: str, pool: str, role: str) -> str:
    return f"{namespace}-{pool}-{role}"


def _deployment(name: str, replicas: int, group: str) -> dict[str, Any]:
    """A Deployment whose pods ask for the role's GPUs on its node group (they stay Pending: no kubelet)."""
    gpus = str(GPUS_PER_REPLICA)
    return deployment_manifest(
        name,
        replicas,
        image="registry.invalid/vllm:soak",
        resources={"requests": {GPU: gpus}, "limits": {GPU: gpus}},
        node_selector={GROUP_KEY: group},
    )


def _pool(name: str, namespace: str, prometheus_url: str, interval_s: float) -> dict[str, Any]:
    manifest = pool_manifest(name, prometheus_url, name, interval=f"{interval_s:g}s", gpuBudget=GPU_BUDGET)
    manifest = copy.deepcopy(manifest)
    for role in ROLES:
        manifest["spec"]["pools"][role]["nodeGroup"] = {"matchLabels": {GROUP_KEY: group_label(namespace, name, role)}}
    return manifest


@dataclass
class _State:
    """What the observer and the injector share, under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    fault: Fault | None = None
    touched: dict[str, float] = field(default_factory=dict)  # target → last write by the racer or the soak
    racer_touched: dict[str, float] = field(default_factory=dict)  # pool → last racer write
    allocatable: dict[str, int] = field(default_factory=dict)  # target → its node group's allocatable GPUs
    allocatable_before: dict[str, int] = field(default_factory=dict)  # … before the last capacity change
    capacity_changed: float = -math.inf
    # Targets target-recreate deleted: inf while gone, then when they were created again (a round that
    # listed the Deployments just before that still misses them).
    gone: dict[str, float] = field(default_factory=dict)


class Soak:
    """The soak's world and its three actors: the injector (the caller's thread), the observer and the racer."""

    def __init__(
        self,
        config: SoakConfig,
        cluster: Cluster,
        namespace: str,
        supervisor: Supervisor,
        factory: PrometheusFactory,
        work_dir: Path,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.cluster = cluster
        self.namespace = namespace
        self.supervisor = supervisor
        self.factory = factory
        self.work_dir = work_dir
        self.log = log
        self.rng = random.Random(config.seed)
        self.pools = pool_names(config.pools)
        self.report = SoakReport(config)
        self.state = _State()
        self.api = cluster.api_client()
        self.apps = kubernetes.client.AppsV1Api(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.racer_api = cluster.api_client()
        self.racer_api.user_agent = "tokenscale-soak-racer"
        self.racer_apps = kubernetes.client.AppsV1Api(self.racer_api)
        self.watch_apps = kubernetes.client.AppsV1Api(cluster.api_client())
        self.watch = kubernetes.watch.Watch()
        self.started = time.monotonic()
        self.stop = threading.Event()
        self.fleet: SimulatedFleet | None = None
        self.proxy: PrometheusProxy | None = None
        self.operator: OperatorProcess | None = None
        self.killing = False  # the injector is killing the operator: its exit is expected
        self.nodes: list[str] = []

    # --- set-up ------------------------------------------------------------------------------

    def setup(self) -> None:
        self.fleet = SimulatedFleet(self.factory, self._rate(0.0))
        self.proxy = PrometheusProxy(self.fleet.prometheus.url)
        for pool in self.pools:
            for role in ROLES:
                name = node_name(self.namespace, pool, role)
                labels = {GROUP_KEY: group_label(self.namespace, pool, role)}
                self.core.create_node({"metadata": {"name": name, "labels": labels}})
                self.nodes.append(name)
                self._set_allocatable(f"{pool}-{role}", INITIAL_ALLOCATABLE[role])
                self.apps.create_namespaced_deployment(
                    self.namespace, _deployment(f"{pool}-{role}", 1, group_label(self.namespace, pool, role))
                )
            manifest = _pool(pool, self.namespace, self.proxy.url, self.config.interval_s)
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest)
        self.operator = OperatorProcess(
            self.supervisor, self.cluster.kubeconfig_path, self.namespace, self.work_dir / "operator.log"
        )
        self._start_operator()

    def _set_allocatable(self, target: str, gpus: int) -> None:
        pool, _, role = target.rpartition("-")
        with self.state.lock:  # before the patch: the checker allows either figure from now on, for a while
            self.state.allocatable_before[target] = self.state.allocatable.get(target, gpus)
            self.state.allocatable[target] = gpus
            self.state.capacity_changed = time.monotonic()
        resources = {"cpu": "64", "memory": "512Gi", "pods": "110", GPU: str(gpus)}
        self.core.patch_node_status(
            node_name(self.namespace, pool, role), {"status": {"capacity": resources, "allocatable": resources}}
        )

    def teardown(self) -> None:
        self.stop.set()
        if self.operator is not None and self.operator.process is not None and self.operator.process.alive():
            self.operator.stop()
        if self.proxy is not None:
            self.proxy.close()
        if self.fleet is not None:
            self.fleet.close()
        for name in self.nodes:
            try:
                self.core.delete_node(name)
            except ApiException as err:
                if err.status != 404:
                    raise

    # --- the operator, as its Deployment would run it ----------------------------------------

    def _start_operator(self) -> None:
        assert self.operator is not None
        self.operator.start()
        self.report.operator_starts += 1

    def _tend(self) -> None:
        """Between the injector's steps: restart an operator that exited, and move the fleet's load."""
        assert self.operator is not None and self.operator.process is not None and self.fleet is not None
        if not self.operator.process.alive() and not self.killing:
            code = self.operator.process.popen.returncode
            self.report.unexpected_exits += 1
            self._violation("crash", "operator", f"exited with status {code} without being killed")
            self._start_operator()
        self.fleet.set_rate(self._rate(time.monotonic() - self.started))

    def _rate(self, elapsed_s: float) -> float:
        middle, half = (RATE_HIGH + RATE_LOW) / 2, (RATE_HIGH - RATE_LOW) / 2
        return middle + half * math.cos(2 * math.pi * elapsed_s / RATE_PERIOD_S)  # from the peak: the budget binds

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._tend()
            time.sleep(min(0.25, left))

    def _wait(self, probe: Callable[[], bool], what: str, timeout_s: float) -> None:
        def tended() -> bool:
            self._tend()
            return probe()

        wait_until(tended, what=what, timeout_s=timeout_s, interval_s=0.25, retry_on=(OSError, ApiException))

    # --- the run -----------------------------------------------------------------------------

    def run(self) -> SoakReport:
        observer = threading.Thread(target=self._observe_loop, name="soak-observer", daemon=True)
        watcher = threading.Thread(target=self._watch_loop, name="soak-watch", daemon=True)
        try:
            self.setup()
            observer.start()
            watcher.start()
            # Warm-up: every pool has decided once before the first fault.
            self._wait(
                lambda: len(self._fresh_decisions()[1]) == len(self.pools),
                "every pool's first decision",
                timeout_s=60 + 3 * self.config.interval_s,
            )
            self.started = time.monotonic()
            kinds: list[str] = []
            done: set[str] = set()
            while time.monotonic() - self.started < self.config.duration_s or done != set(FAULT_KINDS):
                if not kinds:
                    kinds = list(FAULT_KINDS)
                    self.rng.shuffle(kinds)
                kind = kinds.pop()
                self._inject(kind)
                done.add(kind)
                self._sleep(self.rng.uniform(1.0, self.config.interval_s / 2))
            self.report.elapsed_s = time.monotonic() - self.started
        finally:
            self.stop.set()
            self.watch.stop()
            observer.join(timeout=10)
            watcher.join(timeout=WATCH_TIMEOUT_S + 5)
            if self.operator is not None:
                self.report.tracebacks = len(self.operator.tracebacks())
                for reason in _SCALED_LINE.findall(self.operator.log()):
                    self.report.scale_reasons[reason] = self.report.scale_reasons.get(reason, 0) + 1
            self.report.events = self._events()
            self.teardown()
        return self.report

    def _inject(self, kind: str) -> None:
        fault = Fault(kind, "", time.monotonic(), data_fault=kind in ("prometheus-restart", "garbage"))
        with self.state.lock:
            self.state.fault = fault
        getattr(self, "_" + kind.replace("-", "_"))(fault)
        self._clear(fault)
        self.log(f"[{time.monotonic() - self.started:6.1f}s] {kind}: {fault.detail}")
        # Wait for every pool's fresh decision, and a while longer for the late ones to be measured.
        deadline = fault.cleared + 4 * self.config.interval_s if fault.cleared is not None else time.monotonic()
        while time.monotonic() < deadline and len(fault.recovered_s) < len(self.pools):
            self._sleep(0.25)
        with self.state.lock:
            self.state.fault = None
        bound_s = 2 * self.config.interval_s + OBSERVE_EVERY_S
        for pool in self.pools:
            took = fault.recovered_s.get(pool)
            if took is None:
                self._violation(
                    "recovery", pool, f"after {kind}: no fresh decision within {4 * self.config.interval_s:g} s"
                )
            elif took > bound_s:
                self._violation("recovery", pool, f"after {kind}: re-planned {took:.1f} s after the clear")
        self.report.faults.append(fault)

    def _clear(self, fault: Fault) -> None:
        """The fault is over: note the fresh-decision counts now, from which recovery is measured."""
        start, counts = self._fresh_decisions()
        with self.state.lock:
            fault.baseline, fault.baseline_start = counts, start
            fault.cleared = time.monotonic()
            if fault.data_until is None and fault.data_fault:
                fault.data_until = fault.cleared

    # --- faults ------------------------------------------------------------------------------

    def _apiserver_restart(self, fault: Fault) -> None:
        self.cluster.stop_apiserver()
        self._sleep(APISERVER_DOWN_S)
        self.cluster.start_apiserver()
        fault.detail = f"down {time.monotonic() - fault.started:.1f} s"

    def _prometheus_restart(self, fault: Fault) -> None:
        assert self.fleet is not None
        prometheus = self.fleet.prometheus
        prometheus.stop()
        self._sleep(PROMETHEUS_DOWN_S)
        prometheus.start()
        fault.data_until = time.monotonic()
        # Cleared when the pools' load series are back over their whole window (two scrapes in it).
        query = f'count_over_time(vllm:request_success_total{{job="llama-decode"}}[{WINDOW_S:g}s]) >= 2'
        self._wait(lambda: bool(prometheus.query(query)), "the load series back in Prometheus", timeout_s=60)
        back_s = time.monotonic() - fault.started
        fault.detail = f"down {fault.data_until - fault.started:.1f} s, data back after {back_s:.1f} s"

    def _garbage(self, fault: Fault) -> None:
        assert self.proxy is not None
        kind = self.rng.choice(sorted(GARBAGE))
        self.proxy.garbage = GARBAGE[kind]
        self._sleep(self.config.garbage_s)
        self.proxy.garbage = None
        fault.detail = f"{kind} for {self.config.garbage_s:g} s"

    def _touched_pools(self) -> list[str]:
        return self.rng.sample(self.pools, max(1, round(FRACTION_TOUCHED * len(self.pools))))

    def _target_recreate(self, fault: Fault) -> None:
        chosen = [(pool, self.rng.choice(ROLES)) for pool in self._touched_pools()]
        for pool, role in chosen:
            target = f"{pool}-{role}"
            with self.state.lock:
                self.state.gone[target] = math.inf
                self.state.touched[target] = time.monotonic()
            self.apps.delete_namespaced_deployment(target, self.namespace)
        self._sleep(TARGET_GONE_S)
        for pool, role in chosen:
            target = f"{pool}-{role}"

            def created(target: str = target, pool: str = pool, role: str = role) -> bool:
                with self.state.lock:
                    self.state.touched[target] = time.monotonic()
                try:
                    self.apps.create_namespaced_deployment(
                        self.namespace,
                        _deployment(target, BOUNDS[role][0], group_label(self.namespace, pool, role)),
                    )
                except ApiException as err:
                    if err.status != 409:  # the old one is still being deleted (its finalizers)
                        raise
                    return False
                return True

            self._wait(created, f"{target} created again", timeout_s=60)
            with self.state.lock:
                self.state.touched[target] = time.monotonic()
                self.state.gone[target] = time.monotonic()
        fault.detail = f"{len(chosen)} targets: {', '.join(p + '-' + r for p, r in chosen[:4])}…"

    def _capacity_change(self, fault: Fault) -> None:
        changes = []
        for pool in self._touched_pools():
            role = self.rng.choice(ROLES)
            gpus = self.rng.choice(ALLOCATABLE_CHOICES)
            self._set_allocatable(f"{pool}-{role}", gpus)
            changes.append(f"{pool}-{role}={gpus}")
        fault.detail = f"{len(changes)} node groups: {', '.join(changes[:4])}…"

    def _scale_race(self, fault: Fault) -> None:
        chosen = self._touched_pools()
        until = time.monotonic() + 2 * self.config.interval_s
        racer = threading.Thread(target=self._race, args=(chosen, until), name="soak-racer", daemon=True)
        racer.start()
        while racer.is_alive():
            self._sleep(0.25)
        fault.detail = f"{len(chosen)} pools for {2 * self.config.interval_s:g} s"

    def _race(self, chosen: list[str], until: float) -> None:
        """Replace /scale of the chosen pools' targets at random moments with values within bounds and budget."""
        rng = random.Random(self.rng.random())
        while time.monotonic() < until and not self.stop.is_set():
            pool = rng.choice(chosen)
            role = rng.choice(ROLES)
            other = ROLES[1 - ROLES.index(role)]
            target = f"{pool}-{role}"
            try:
                other_replicas = int(self.racer_apps.read_namespaced_deployment_scale(f"{pool}-{other}", self.namespace)
                                     .spec.replicas)  # fmt: skip
                low, high = BOUNDS[role]
                high = min(high, GPU_BUDGET // GPUS_PER_REPLICA - other_replicas)
                if high >= low:
                    scale = self.racer_apps.read_namespaced_deployment_scale(target, self.namespace)
                    scale.spec.replicas = rng.randint(low, high)
                    with self.state.lock:
                        self.state.touched[target] = time.monotonic()
                        self.state.racer_touched[pool] = time.monotonic()
                    self.racer_apps.replace_namespaced_deployment_scale(target, self.namespace, scale)
                    self.report.racer_writes += 1
                    with self.state.lock:
                        self.state.touched[target] = time.monotonic()
                        self.state.racer_touched[pool] = time.monotonic()
            except ApiException as err:
                if err.status != 409:
                    raise
                self.report.racer_conflicts += 1
            time.sleep(rng.uniform(0.05, 0.5))

    def _operator_kill(self, fault: Fault) -> None:
        assert self.operator is not None
        self.killing = True
        try:
            self.operator.kill()
            self._start_operator()
        finally:
            self.killing = False
        fault.detail = f"restarted in {time.monotonic() - fault.started:.1f} s"

    # --- the observer ------------------------------------------------------------------------

    def _violation(self, invariant: str, subject: str, detail: str) -> None:
        v = Violation(time.monotonic() - self.started, invariant, subject, detail)
        with self.state.lock:
            self.report.violations.append(v)
        self.log(f"VIOLATION t={v.at_s:.1f}s {invariant} {subject}: {detail}")

    def _fresh_decisions(self) -> tuple[float | None, dict[str, float]]:
        """The operator's start time and, per pool, its decisions not held for missing metrics."""
        assert self.operator is not None
        try:
            text = self.operator.metrics()
        except (OSError, urllib.error.URLError):
            return None, {}
        start: float | None = None
        counts: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("process_start_time_seconds "):
                start = float(line.split()[1])
            match = _DECISION_LINE.match(line)
            if match:
                labels = dict(_LABEL.findall(match.group(1)))
                if labels.get("binding") != "metrics":
                    counts[labels["pool"]] = counts.get(labels["pool"], 0.0) + float(match.group(2))
        return start, counts

    def _watch_loop(self) -> None:
        """Every replicas change the moment the apiserver reports it: bounds and GPU budget hold at every
        instant, not only at the observer's rounds (a pool's two targets are written one after the other)."""
        while not self.stop.is_set():
            try:
                listed = self.watch_apps.list_namespaced_deployment(self.namespace, _request_timeout=5)
                replicas = {d.metadata.name: int(d.spec.replicas) for d in listed.items}
                stream = self.watch.stream(
                    self.watch_apps.list_namespaced_deployment,
                    self.namespace,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=WATCH_TIMEOUT_S,
                    _request_timeout=WATCH_TIMEOUT_S + 5,
                )
                for event in stream:
                    if event["type"] not in ("ADDED", "MODIFIED", "DELETED"):
                        break  # an ERROR (the watch expired): list again
                    name, n = event["object"].metadata.name, int(event["object"].spec.replicas)
                    if event["type"] == "DELETED":
                        replicas.pop(name, None)
                        continue
                    if replicas.get(name) == n:
                        continue  # the controller's status updates
                    replicas[name] = n
                    self.report.watch_events += 1
                    self._check_instant(name.rpartition("-")[0], replicas)
            except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError):
                self.stop.wait(0.5)  # the apiserver restarted, or the watch expired (410): list again

    def _check_instant(self, pool: str, replicas: dict[str, int]) -> None:
        targets = [f"{pool}-{role}" for role in ROLES]
        mine = {t: replicas[t] for t in targets if t in replicas}
        with self.state.lock:
            racer_touched = dict(self.state.racer_touched)
        look = Look(
            now=time.monotonic(),
            previous_at=time.monotonic(),
            replicas=mine,
            previous=mine,
            data_fault=None,
            racer_touched=racer_touched,
            gone=frozenset(t for t in targets if t not in mine),
        )
        found, _ = check([pool], self.config.interval_s, look)
        for invariant, subject, detail in found:
            self._violation(invariant, subject, detail + " (seen by the watch)")

    def _events(self) -> dict[str, int]:
        found: dict[str, int] = {}
        try:
            events = self.core.list_namespaced_event(self.namespace, _request_timeout=10).items
        except (ApiException, urllib3.exceptions.HTTPError, OSError):
            return found  # the soak failed with the apiserver down: its own error is the one to report
        for event in events:
            if event.involved_object.kind == "InferencePool":
                found[event.reason] = found.get(event.reason, 0) + int(event.count or 1)
        return found

    def _replicas(self) -> dict[str, int]:
        raw = self.apps.list_namespaced_deployment(
            self.namespace, _preload_content=False, _request_timeout=LIST_TIMEOUT_S
        )
        return {d["metadata"]["name"]: int(d["spec"]["replicas"]) for d in json.loads(raw.data)["items"]}

    def _observe_loop(self) -> None:
        previous: dict[str, int] | None = None
        previous_at = time.monotonic()
        while not self.stop.wait(OBSERVE_EVERY_S):
            now = time.monotonic()
            try:
                replicas = self._replicas()
            except (ApiException, urllib3.exceptions.HTTPError, OSError):
                self.report.skipped_observations += 1
                continue
            self._check(replicas, previous, previous_at, now)
            self._track_recovery(now)
            previous, previous_at = replicas, now
            self.report.observations += 1

    def _check(self, replicas: dict[str, int], previous: dict[str, int] | None, previous_at: float, now: float) -> None:
        with self.state.lock:
            fault = self.state.fault
            look = Look(
                now=now,
                previous_at=previous_at,
                replicas=replicas,
                previous=previous or {},
                data_fault=(fault.kind, fault.started, fault.data_until) if fault and fault.data_fault else None,
                touched=dict(self.state.touched),
                racer_touched=dict(self.state.racer_touched),
                allocatable=dict(self.state.allocatable),
                allocatable_before=dict(self.state.allocatable_before),
                capacity_changed=self.state.capacity_changed,
                gone=frozenset(t for t, back in self.state.gone.items() if time.monotonic() - back < LIST_TIMEOUT_S),
            )
        found, changes = check(self.pools, self.config.interval_s, look)
        self.report.operator_scale_changes += changes
        for invariant, subject, detail in found:
            self._violation(invariant, subject, detail)

    def _track_recovery(self, now: float) -> None:
        with self.state.lock:
            fault = self.state.fault
        if fault is None or fault.cleared is None or len(fault.recovered_s) == len(self.pools):
            return
        start, counts = self._fresh_decisions()
        if start is None:
            return
        baseline = fault.baseline if start == fault.baseline_start else {}
        for pool in self.pools:
            if pool not in fault.recovered_s and counts.get(pool, 0.0) > baseline.get(pool, 0.0):
                fault.recovered_s[pool] = now - fault.cleared


def run_soak(
    config: SoakConfig,
    cluster: Cluster,
    namespace: str,
    supervisor: Supervisor,
    factory: PrometheusFactory,
    work_dir: Path,
    log: Callable[[str], None] = print,
) -> SoakReport:
    """Run the soak in `namespace` of `cluster` (whose apiserver it restarts) and return its report."""
    return Soak(config, cluster, namespace, supervisor, factory, work_dir, log).run()
