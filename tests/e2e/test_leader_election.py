"""Two operators on one namespace with `--leader-election-namespace`: one acts, the other waits, and
the standby takes over within two lease durations of the leader being SIGKILLed (issue 13)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from harness.cluster import Cluster
from harness.operator_env import (
    OperatorProcess,
    SimulatedFleet,
    create_deployment,
    create_pool,
    get_pool,
    pool_manifest,
)
from harness.processes import Supervisor
from harness.wait import wait_until

from tokenscale.kube.lease import LEASE_DURATION_S

pytestmark = pytest.mark.e2e

LEASE = "tokenscale-e2e"


def _cycles_run(op: OperatorProcess, pool: str) -> float:
    """Cycles `op` has run for `pool` (none on a standby)."""
    for line in op.metrics().splitlines():
        if line.startswith("tokenscale_reconcile_duration_seconds_count{") and f'pool="{pool}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _holder(api_client: kubernetes.client.ApiClient, namespace: str) -> str | None:
    lease = kubernetes.client.CoordinationV1Api(api_client).read_namespaced_lease(LEASE, namespace)
    return lease.spec.holder_identity  # type: ignore[union-attr,no-any-return]


def test_one_operator_leads_and_the_standby_takes_over_when_it_is_killed(
    cluster: Cluster,
    namespace: str,
    fleet: SimulatedFleet,
    supervisor: Supervisor,
    tmp_path: Path,
    apis: tuple[Any, Any, Any],
    api_client: kubernetes.client.ApiClient,
    inferencepool_crd: Any,
) -> None:
    apps, custom, _ = apis
    create_deployment(apps, namespace, "llama-prefill", 1)
    create_deployment(apps, namespace, "llama-decode", 1)
    create_pool(custom, namespace, pool_manifest("llama", fleet.prometheus.url))
    election = ("--leader-election-namespace", namespace, "--leader-election-lease", LEASE)
    a = OperatorProcess(supervisor, cluster.kubeconfig_path, namespace, tmp_path / "a.log", election).start()
    wait_until(lambda: "leader: holds the Lease" in a.log() or None, what="a to lead", timeout_s=30, interval_s=0.2)
    # b answers its liveness probe (start() waits for /healthz) while it waits for the Lease.
    b = OperatorProcess(supervisor, cluster.kubeconfig_path, namespace, tmp_path / "b.log", election).start()
    assert a.process is not None and b.process is not None
    wait_until(lambda: _cycles_run(a, "llama") >= 2 or None, what="a's cycles", timeout_s=30, interval_s=0.2)
    time.sleep(3 * 2.0)  # three of b's attempts (every 2 s) while a renews
    assert "standby: waiting for the Lease" in b.log() and "leader:" not in b.log(), b.log()
    assert _cycles_run(b, "llama") == 0, "the standby planned a pool"
    assert "tokenscale_leader 0.0" in b.metrics() and "tokenscale_leader 1.0" in a.metrics()
    assert _holder(api_client, namespace) == a.identity()

    cycles_before = _cycles_run(a, "llama")
    killed = time.monotonic()
    a.kill()
    wait_until(lambda: "leader: holds the Lease" in b.log() or None, what="b to take over",
               timeout_s=2 * LEASE_DURATION_S + 10, interval_s=0.1)  # fmt: skip
    took_over_s = time.monotonic() - killed
    print(f"takeover after the leader's SIGKILL: {took_over_s:.1f} s (lease {LEASE_DURATION_S:g} s)")
    assert took_over_s <= 2 * LEASE_DURATION_S
    assert _holder(api_client, namespace) == b.identity()
    wait_until(lambda: _cycles_run(b, "llama") >= 2 or None, what="b's cycles", timeout_s=30, interval_s=0.2)
    assert "tokenscale_leader 1.0" in b.metrics()
    assert cycles_before >= 2
    decided = get_pool(custom, namespace, "llama")["status"]["lastDecision"]
    assert decided["reason"]

    # A clean stop hands the Lease back at once.
    assert b.stop() == 0
    assert _holder(api_client, namespace) is None
    assert b.tracebacks() == [], b.log()[-4000:]
