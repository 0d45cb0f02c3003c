"""Benchmark: pools one operator process reconciles per 30 s interval, its memory, its decision latency.

Against the real components the tests use (tests/harness): etcd + kube-apiserver 1.20 +
controller-manager, a real Prometheus scraping one simulated vLLM fleet, and `tokenscale run` as a
child process. N InferencePools (each with its two Deployments) share the fleet's metrics. After a
warm-up the benchmark watches one 30 s interval and prints:
- pools reconciled in it (cycles counted by the operator's own reconcile histogram) out of N, and
  those whose recorded recommendation changed (the status is written only when something changed);
- the operator's RSS (VmRSS of the process);
- decision latency from the operator's own `tokenscale_reconcile_duration_seconds` histogram (start
  of the read to the status write, including the `/scale` patch): median and p99 bucket bounds;
- the CPU each process used in the interval, and the apiserver's requests by verb and resource;
- the apiserver writes per interval: status writes (per pool), `/scale` writes, Events, all.
  Measured (issue 13, 500 pools): 386 status writes (0.89 per cycle) and 1,108 writes in all before
  the status was written only on change; 45 (0.10 per cycle) and 48 after.
The pools use production defaults (5-minute scale-down stabilization, default metrics window).
Goal (issue 6): ≥ 500 pools per interval, RSS ≤ 250 MB, p99 ≤ 1 s. Prints figures, asserts nothing.

    .venv/bin/python bench/bench_operator.py [--pools 500] [--interval 30] [--profile FILE]

`--profile` samples the operator with py-spy (`pip install py-spy`) while the interval runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness.binaries import find  # noqa: E402
from harness.cluster import Cluster, start_cluster  # noqa: E402
from harness.operator_env import (  # noqa: E402
    OperatorProcess,
    SimulatedFleet,
    create_deployment,
    create_pool,
    pool_manifest,
)
from harness.processes import Supervisor  # noqa: E402
from harness.prometheus import PrometheusFactory  # noqa: E402
from harness.resources import apply_crd, create_namespace  # noqa: E402


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


# The simulated fleet all pools read: 2 prefill and 4 decode replicas (SimulatedFleet). At this rate
# they meet the pools' objectives, so plans settle after the first scale-up (at 40 req/s they do
# not, and every pool climbs to maxReplicas a step per cycle: a benchmark of scale writes).
FLEET_RATE_PER_S = 10.0
MAX_WARMUP_INTERVALS = 12
SETTLED_SCALE_WRITES = 0.05  # per pool and interval: the plans have settled


def _manifest(name: str, prometheus_url: str, interval_s: float) -> dict[str, Any]:
    """The e2e tests' pool with the production defaults those tests shorten to stay quick: the
    scale-down stabilization window (20 s there, less than this interval, so every cycle may scale),
    the metrics window and the forecast's cold start."""
    manifest = pool_manifest(name, prometheus_url, name, interval=f"{interval_s:g}s")
    spec = manifest["spec"]
    del spec["behavior"], spec["forecast"], spec["metrics"]["window"]
    return manifest


def _pods_made(apps: kubernetes.client.AppsV1Api, namespace: str) -> bool:
    """Every Deployment has the pods its replicas ask for (status.replicas == spec.replicas)."""
    found = json.loads(apps.list_namespaced_deployment(namespace, _preload_content=False).data)
    return all((d.get("status") or {}).get("replicas", 0) == d["spec"]["replicas"] for d in found["items"])


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_by_process(supervisor: Supervisor) -> dict[str, float]:
    found = {p.name: _cpu_s(p.pid) for p in supervisor.processes if p.alive()}
    found["benchmark (simulated fleet)"] = _cpu_s(os.getpid())
    return found


def _apiserver_requests(cluster: Cluster) -> dict[str, float]:
    """Requests the apiserver has served, by verb and resource[/subresource] (apiserver_request_total)."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            labels = sample.labels
            what = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
            key = f"{labels.get('verb', '')} {what}"
            counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def _cycles_by_pool(text: str) -> dict[str, float]:
    """Cycles each pool has run: the count of the operator's reconcile-duration histogram, per pool."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "tokenscale_reconcile_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_count"):
                found[sample.labels.get("pool", "")] = sample.value
    return found


WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "APPLY")


def _buckets(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts of a histogram, summed over all pools' series."""
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def _quantiles(before: dict[float, float], after: dict[float, float], qs: tuple[float, ...]) -> dict[float, float]:
    """Upper bucket bounds holding each quantile of the observations made between two scrapes."""
    delta = {b: after[b] - before.get(b, 0.0) for b in after}
    total = delta.get(float("inf"), 0.0)
    return {q: next((b for b in sorted(delta) if delta[b] >= q * total), float("nan")) for q in qs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pools", type=int, default=500)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument(
        "--profile", type=Path, help="also sample the operator with py-spy into this file (collapsed stacks)"
    )
    args = parser.parse_args()
    supervisor = Supervisor()
    work = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    try:
        t0 = time.monotonic()
        cluster = start_cluster(supervisor, work / "cluster")
        print(f"cluster ready in {time.monotonic() - t0:.1f}s")
        api = cluster.api_client()
        apps, custom = kubernetes.client.AppsV1Api(api), kubernetes.client.CustomObjectsApi(api)
        apply_crd(api, yaml.safe_load((ROOT / "crds" / "tokenscale.dev_inferencepools.yaml").read_text()))
        fleet = SimulatedFleet(PrometheusFactory(find("prometheus"), supervisor, work / "prometheus"), FLEET_RATE_PER_S)
        namespace = create_namespace(api, prefix="bench")
        t0 = time.monotonic()
        for i in range(args.pools):
            name = f"pool-{i:04d}"
            create_deployment(apps, namespace, f"{name}-prefill", 1)
            create_deployment(apps, namespace, f"{name}-decode", 1)
            create_pool(custom, namespace, _manifest(name, fleet.prometheus.url, args.interval))
        print(f"{args.pools} pools and {2 * args.pools} Deployments created in {time.monotonic() - t0:.1f}s")
        op = OperatorProcess(supervisor, cluster.kubeconfig_path, namespace, work / "operator.log").start()
        assert op.process is not None

        def recommendation_times() -> dict[str, list[float]]:
            found = custom.list_namespaced_custom_object("tokenscale.dev", "v1alpha1", namespace, "inferencepools")
            return {
                p["metadata"]["name"]: [float(r["time"]) for r in p.get("status", {}).get("recommendations", [])]
                for p in found["items"]
            }

        # Warm-up: every pool's first cycles and the first scale-up of all pools at once (its
        # latency printed apart), until an interval passes with few scale writes and the
        # controller-manager has made the pods asked for (it creates ~20 a second here).
        def scale_writes() -> int:
            return sum(1 for line in op.log().splitlines() if " scaled " in line)

        time.sleep(args.interval)
        for _ in range(MAX_WARMUP_INTERVALS):
            written = scale_writes()
            time.sleep(args.interval)
            if scale_writes() - written <= SETTLED_SCALE_WRITES * args.pools and _pods_made(apps, namespace):
                break
        q = _quantiles({}, _buckets(op.metrics(), "tokenscale_reconcile_duration_seconds"), (0.5, 0.99))
        print(f"warm-up: {scale_writes()} scale writes; decision latency over it (first cycles included): "
              f"median ≤ {q[0.5]:g}s, p99 ≤ {q[0.99]:g}s")  # fmt: skip
        start = time.time()
        metrics_before = op.metrics()
        hist_before = _buckets(metrics_before, "tokenscale_reconcile_duration_seconds")
        cycles_before = _cycles_by_pool(metrics_before)
        cpu_before = _cpu_by_process(supervisor)
        requests_before = _apiserver_requests(cluster)
        writes_before = scale_writes()
        spy = None
        if args.profile:
            spy = subprocess.Popen(
                ["py-spy", "record", "-p", str(op.process.pid), "-d", f"{args.interval:g}", "-r", "50",
                 "--nonblocking", "--gil", "-f", "raw", "-o", str(args.profile)],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        time.sleep(args.interval)
        cpu_after = _cpu_by_process(supervisor)
        metrics_after = op.metrics()
        hist_after = _buckets(metrics_after, "tokenscale_reconcile_duration_seconds")
        cycles_after = _cycles_by_pool(metrics_after)
        requests_after = _apiserver_requests(cluster)
        writes_after = scale_writes()
        window_s = time.time() - start
        if spy is not None:
            spy.wait(60)
        # Cycles counted by the operator's own histogram: the status is no longer written every cycle,
        # so its recommendation times only show the cycles whose recommendation changed.
        reconciled = sum(1 for pool, n in cycles_after.items() if n > cycles_before.get(pool, 0.0))
        cycles = sum(cycles_after.values()) - sum(cycles_before.values())
        times_by_pool = recommendation_times()
        rss = _rss_mb(op.process.pid)
        q = _quantiles(hist_before, hist_after, (0.5, 0.99))
        print(
            f"pools reconciled in one {args.interval:g}s interval: {reconciled} of {args.pools} ({cycles:.0f} cycles)"
        )
        changed = sum(1 for times in times_by_pool.values() if any(start <= t < start + window_s for t in times))
        print(f"pools whose recorded recommendation changed in it: {changed}")
        print(f"operator RSS: {rss:.0f} MB")
        print(f"decision latency in that interval (read → status write): median ≤ {q[0.5]:g}s, "
              f"p99 ≤ {q[0.99]:g}s (bucket bounds)")  # fmt: skip
        print(f"CPU used from the first snapshot to the last ({window_s:.1f}s; {os.cpu_count()} cores):")
        for proc, used in sorted(cpu_after.items(), key=lambda kv: -(kv[1] - cpu_before.get(kv[0], 0.0))):
            print(f"  {proc:28s} {used - cpu_before.get(proc, 0.0):6.1f} s")
        served = {k: v - requests_before.get(k, 0.0) for k, v in requests_after.items()}
        print(f"apiserver requests in that interval: {sum(served.values()):.0f}")
        for what, n in sorted(served.items(), key=lambda kv: -kv[1])[:8]:
            print(f"  {what:40s} {n:6.0f}")
        print(f"scale writes in that interval: {writes_after - writes_before}")
        writes = {k: v for k, v in served.items() if k.split(" ", 1)[0] in WRITE_VERBS}
        status_writes = sum(v for k, v in writes.items() if k.endswith(" inferencepools/status"))
        per_interval = args.interval / window_s  # the snapshots span a little more than one interval
        print(
            f"apiserver writes per {args.interval:g}s interval: {sum(writes.values()) * per_interval:.0f} in all, "
            f"{status_writes * per_interval:.0f} status writes ({status_writes * per_interval / args.pools:.2f} "
            f"per pool), {sum(v for k, v in writes.items() if k.endswith('/scale')) * per_interval:.0f} /scale "
            f"writes, {sum(v for k, v in writes.items() if k.endswith(' events')) * per_interval:.0f} Events"
        )
        for what, n in sorted(writes.items(), key=lambda kv: -kv[1]):
            if n > 0:
                print(f"  {what:40s} {n:6.0f}")
        op.stop()
        fleet.close()
    finally:
        supervisor.stop_all()


if __name__ == "__main__":
    main()
