"""Fixtures for the end-to-end tests: the project's own CRD installed on the test apiserver.

`operator` is `tokenscale run` for the test's namespace (the test starts it; it must stop cleanly,
without a traceback in its log). `fleet` is a simulated 70B fleet at 40 req/s scraped by a real
Prometheus, and `apis` the typed clients (apps, custom objects, core) the operator tests read the
world with.
`inferencepool_crd` applies the generated crds/tokenscale.dev_inferencepools.yaml once per session
through the Python client and waits until it is Established and served; a CRD the server rejects
fails every test that needs it, with the server's reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from harness.cluster import Cluster
from harness.operator_env import OperatorProcess, SimulatedFleet
from harness.processes import Supervisor
from harness.prometheus import PrometheusFactory
from harness.resources import apply_crd
from kubernetes.client.exceptions import ApiException

from tokenscale import crd

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / crd.CRD_FILE_NAME


@pytest.fixture(scope="session")
def inferencepool_crd(api_client: kubernetes.client.ApiClient) -> dict[str, Any]:
    """The InferencePool CRD as the test apiserver stored it, Established and in discovery."""
    manifest: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    try:
        return apply_crd(api_client, manifest)
    except ApiException as err:
        if err.status != 422:
            raise
        reason = json.loads(err.body).get("message", err.body) if err.body else err.reason
    pytest.fail(f"kube-apiserver 1.20 rejected {CRD_FILE.relative_to(ROOT)}: {reason}", pytrace=False)


@pytest.fixture
def fleet(prometheus_factory: PrometheusFactory) -> Iterator[SimulatedFleet]:
    f = SimulatedFleet(prometheus_factory, 40.0)
    try:
        yield f
    finally:
        f.close()


@pytest.fixture
def apis(api_client: kubernetes.client.ApiClient) -> tuple[Any, Any, Any]:
    return (
        kubernetes.client.AppsV1Api(api_client),
        kubernetes.client.CustomObjectsApi(api_client),
        kubernetes.client.CoreV1Api(api_client),
    )


@pytest.fixture
def operator(
    cluster: Cluster, namespace: str, supervisor: Supervisor, tmp_path: Path, inferencepool_crd: Any
) -> Iterator[OperatorProcess]:
    """`tokenscale run` for the test's namespace (started by the test); stopped cleanly, no tracebacks."""
    op = OperatorProcess(supervisor, cluster.kubeconfig_path, namespace, tmp_path / "operator.log")
    yield op
    if op.process is not None and op.process.alive():
        assert op.stop() == 0
    assert op.tracebacks() == [], op.log()[-6000:]
