"""A local demo: watch tokenscale scale a disaggregated pool up and down under a load ramp.

Everything is real except the GPUs: etcd + kube-apiserver 1.20 + controller-manager (from
`scripts/setup-test-env.sh`), a Prometheus scraping a simulated Llama-3.1-70B fleet's vLLM metrics,
and `tokenscale run`. The simulated fleet follows the Deployments' replica counts (with a 10 s cold
start), so when the operator scales, the latencies it reads change. The load goes 2 → 30 → 2 req/s;
one line every 5 s shows the load, each pool's current/desired replicas, the observed p90 TTFT
and TPOT, and the last decision's reason. About four minutes.

    bash scripts/setup-test-env.sh && .venv/bin/python examples/demo/demo.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import kubernetes
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from harness.binaries import find  # noqa: E402
from harness.cluster import start_cluster  # noqa: E402
from harness.operator_env import (  # noqa: E402
    OperatorProcess,
    SimulatedFleet,
    create_deployment,
    create_pool,
    get_pool,
    pool_manifest,
    replicas_of,
)
from harness.processes import Supervisor  # noqa: E402
from harness.prometheus import PrometheusFactory  # noqa: E402
from harness.resources import apply_crd, create_namespace  # noqa: E402

RAMP = ((0.0, 2.0), (40.0, 30.0), (150.0, 2.0), (240.0, None))  # (seconds from start, req/s); None: stop


def _ms(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value * 1000:.0f}ms"  # None or NaN: not observed


def main() -> None:
    supervisor = Supervisor()
    work = Path(tempfile.mkdtemp(prefix="tokenscale-demo-"))
    try:
        print("starting etcd, kube-apiserver, controller-manager ...", flush=True)
        cluster = start_cluster(supervisor, work / "cluster")
        api = cluster.api_client()
        apps, custom = kubernetes.client.AppsV1Api(api), kubernetes.client.CustomObjectsApi(api)
        # Through the API, as the chart's crds/ are installed: kubectl 1.33's client-side validation
        # does not know the CEL rules a 1.20 server ignores.
        apply_crd(api, yaml.safe_load((ROOT / "crds" / "tokenscale.dev_inferencepools.yaml").read_text()))
        print("starting the simulated fleet and Prometheus ...", flush=True)
        fleet = SimulatedFleet(PrometheusFactory(find("prometheus"), supervisor, work / "prometheus"), RAMP[0][1] or 0)
        namespace = create_namespace(api, prefix="demo")
        create_deployment(apps, namespace, "llama-prefill", 2)
        create_deployment(apps, namespace, "llama-decode", 4)
        manifest = pool_manifest("llama", fleet.prometheus.url, interval="5s")
        manifest["spec"]["metrics"]["window"] = "15s"
        manifest["spec"]["behavior"] = {"scaleDown": {"stabilizationWindow": "30s"}}
        create_pool(custom, namespace, manifest)
        op = OperatorProcess(supervisor, cluster.kubeconfig_path, namespace, work / "operator.log").start()
        print(f"operator running (log {work / 'operator.log'}); kubeconfig {cluster.kubeconfig_path}\n", flush=True)
        print(f"{'t':>5} {'load':>6} {'prefill':>8} {'decode':>7} {'p90 TTFT':>9} {'p90 TPOT':>9}  reason")
        start = time.monotonic()
        step = 0
        while True:
            elapsed = time.monotonic() - start
            while step + 1 < len(RAMP) and elapsed >= RAMP[step + 1][0]:
                step += 1
            rate = RAMP[step][1]
            if rate is None:
                break
            fleet.set_rate(rate)
            for role in ("prefill", "decode"):
                fleet.live.set_replicas(role, replicas_of(apps, namespace, f"llama-{role}"))  # the pods "run"
            status = get_pool(custom, namespace, "llama").get("status", {})
            pools = status.get("pools", {})
            # Measured values from the operator's metrics, exported every cycle: the status carries
            # them too, but is written only when something changes (or every 5 minutes).
            observed = _gauges(op.metrics())

            pairs = [
                f"{replicas_of(apps, namespace, f'llama-{role}')}/{pools.get(role, {}).get('desiredReplicas', '-')}"
                for role in ("prefill", "decode")
            ]
            ttft = _ms(observed.get("tokenscale_observed_ttft_seconds"))
            tpot = _ms(observed.get("tokenscale_observed_tpot_seconds"))
            reason = (status.get("lastDecision") or {}).get("reason", "")
            line = f"{elapsed:5.0f} {rate:6.1f} {pairs[0]:>8} {pairs[1]:>7} {ttft:>9} {tpot:>9}  {reason[:90]}"
            print(line, flush=True)
            time.sleep(5.0)
        print("\nkubectl get tspool:")
        print(cluster.kubectl("get", "tspool", "-n", namespace).stdout)
        op.stop()
        fleet.close()
    finally:
        supervisor.stop_all()


def _gauges(text: str) -> dict[str, float]:
    """The operator's per-pool gauges by name (one pool here), from its /metrics text."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tokenscale_observed_") and "{" in line:
            found[line.split("{", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return found


if __name__ == "__main__":
    main()
