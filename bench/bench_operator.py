"""Benchmark: pools one operator process reconciles per 30 s interval, its memory, its decision latency.

Against the real components the tests use (tests/harness): etcd + kube-apiserver 1.20 +
controller-manager, a real Prometheus scraping one simulated vLLM fleet, and `tokenscale run` as a
child process. N InferencePools (each with its two Deployments) share the fleet's metrics. After a
warm-up the benchmark watches one 30 s interval and prints:
- pools reconciled in it (a new recommendation in status) out of N;
- the operator's RSS (VmRSS of the process);
- decision latency from the operator's own `tokenscale_reconcile_duration_seconds` histogram (start
  of the read to the status write, including the `/scale` patch): median and p99 bucket bounds.
Goal (issue 6): ≥ 500 pools per interval, RSS ≤ 250 MB, p99 ≤ 1 s. Prints figures, asserts nothing.

    .venv/bin/python bench/bench_operator.py [--pools 500] [--interval 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import kubernetes
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness.binaries import find  # noqa: E402
from harness.cluster import start_cluster  # noqa: E402
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
        fleet = SimulatedFleet(PrometheusFactory(find("prometheus"), supervisor, work / "prometheus"), 40.0)
        namespace = create_namespace(api, prefix="bench")
        t0 = time.monotonic()
        for i in range(args.pools):
            name = f"pool-{i:04d}"
            create_deployment(apps, namespace, f"{name}-prefill", 1)
            create_deployment(apps, namespace, f"{name}-decode", 1)
            create_pool(
                custom, namespace, pool_manifest(name, fleet.prometheus.url, name, interval=f"{args.interval:g}s")
            )
        print(f"{args.pools} pools and {2 * args.pools} Deployments created in {time.monotonic() - t0:.1f}s")
        op = OperatorProcess(supervisor, cluster.kubeconfig_path, namespace, work / "operator.log").start()
        assert op.process is not None

        def last_times() -> dict[str, float]:
            found = custom.list_namespaced_custom_object("tokenscale.dev", "v1alpha1", namespace, "inferencepools")
            return {
                p["metadata"]["name"]: float(p["status"]["recommendations"][-1]["time"])
                for p in found["items"]
                if p.get("status", {}).get("recommendations")
            }

        time.sleep(2 * args.interval)  # warm-up: every pool's daemon started and ran at least once
        start = time.time()
        before = last_times()
        hist_before = _buckets(op.metrics(), "tokenscale_reconcile_duration_seconds")
        time.sleep(args.interval)
        after = last_times()
        hist_after = _buckets(op.metrics(), "tokenscale_reconcile_duration_seconds")
        reconciled = sum(1 for n, t in after.items() if t > before.get(n, 0.0) and t >= start)
        rss = _rss_mb(op.process.pid)
        q = _quantiles(hist_before, hist_after, (0.5, 0.99))
        print(f"pools reconciled in one {args.interval:g}s interval: {reconciled} of {args.pools}")
        print(f"operator RSS: {rss:.0f} MB")
        print(f"decision latency in that interval (read → status write): median ≤ {q[0.5]:g}s, "
              f"p99 ≤ {q[0.99]:g}s (bucket bounds)")  # fmt: skip
        op.stop()
        fleet.close()
    finally:
        supervisor.stop_all()


if __name__ == "__main__":
    main()
