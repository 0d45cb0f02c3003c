"""Chaos soak (issue 13): the operator on the real apiserver + Prometheus + simulated fleet under faults.

Starts its own etcd + kube-apiserver 1.20 + controller-manager (tests/harness), a simulated vLLM fleet
scraped by a real Prometheus behind a proxy, N InferencePools with node groups and a GPU budget, and
`tokenscale run`; then injects faults one at a time (apiserver and Prometheus restarts, garbage from
Prometheus, targets deleted and recreated, node-group capacity changes, a racing /scale writer, the
operator SIGKILLed) while an observer checks the invariants every second. The faults, invariants and
how recovery is measured are described in tests/harness/soak.py. Prints the report and exits 1 on any
violation. tests/e2e/test_soak.py runs the same soak shorter in CI.

    .venv/bin/python bench/bench_soak.py [--duration-s 600] [--pools 50]
        [--interval-s 10] [--garbage-s 60] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness.binaries import find  # noqa: E402
from harness.cluster import start_cluster  # noqa: E402
from harness.processes import Supervisor  # noqa: E402
from harness.prometheus import PrometheusFactory  # noqa: E402
from harness.resources import apply_crd, create_namespace  # noqa: E402
from harness.soak import SoakConfig, run_soak  # noqa: E402


def main() -> int:
    defaults = SoakConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration-s", type=float, default=defaults.duration_s, help="inject faults this long")
    parser.add_argument("--pools", type=int, default=defaults.pools, help="InferencePools (two Deployments each)")
    parser.add_argument("--interval-s", type=float, default=defaults.interval_s, help="the pools' spec.interval")
    parser.add_argument("--garbage-s", type=float, default=defaults.garbage_s, help="how long garbage is served")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="the faults' order and targets")
    args = parser.parse_args()
    config = SoakConfig(args.duration_s, args.pools, args.interval_s, args.garbage_s, args.seed)
    supervisor = Supervisor()
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    print(f"work directory (logs): {work}")
    try:
        t0 = time.monotonic()
        cluster = start_cluster(supervisor, work / "cluster")
        api = cluster.api_client()
        apply_crd(api, yaml.safe_load((ROOT / "crds" / "tokenscale.dev_inferencepools.yaml").read_text()))
        namespace = create_namespace(api, prefix="soak")
        print(f"cluster ready in {time.monotonic() - t0:.1f}s")
        factory = PrometheusFactory(find("prometheus"), supervisor, work / "prometheus")
        report = run_soak(config, cluster, namespace, supervisor, factory, work / "soak")
        print("\n".join(report.lines()))
        return 1 if report.violations else 0
    finally:
        supervisor.stop_all()


if __name__ == "__main__":
    sys.exit(main())
