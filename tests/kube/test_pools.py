"""`kube.pools.write_status` against a real apiserver: one request on the version the status was
computed from, a fresh read after a 409, removed fields gone, and a deleted pool is no error."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from harness.resources import apply_crd

from tokenscale.kube import pools

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "tokenscale.dev", "v1alpha1", "inferencepools"
SPEC = {
    "model": "m",
    "objectives": {"ttft": {"quantile": 0.9, "target": "1s"}, "tpot": {"quantile": 0.9, "target": "50ms"}},
    "metrics": {"prometheus": {"url": "http://prometheus:9090"}},
    "pools": {
        "aggregated": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "engine"},
            "maxReplicas": 4,
        }
    },
    "mode": "Aggregated",
}


@pytest.fixture(scope="module")
def pool_crd(api_client: kubernetes.client.ApiClient) -> None:
    apply_crd(api_client, yaml.safe_load((ROOT / "crds" / "tokenscale.dev_inferencepools.yaml").read_text()))


def _create(api_client: kubernetes.client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferencePool", "metadata": {"name": name}, "spec": SPEC}
    custom = kubernetes.client.CustomObjectsApi(api_client)
    return dict(custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body))  # type: ignore[arg-type]


def _get(api_client: kubernetes.client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    custom = kubernetes.client.CustomObjectsApi(api_client)
    return dict(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))  # type: ignore[arg-type]


def _write(api_client: kubernetes.client.ApiClient, namespace: str, status: dict[str, Any], version: str) -> bool:
    return asyncio.run(pools.write_status(api_client, namespace, "pool", status, version))


@pytest.mark.usefixtures("pool_crd")
def test_status_is_replaced_on_the_version_it_was_computed_from(
    api_client: kubernetes.client.ApiClient, namespace: str
) -> None:
    created = _create(api_client, namespace, "pool")
    first = {"observedGeneration": 1, "lastDecision": {"reason": "First", "dryRun": False}}
    assert _write(api_client, namespace, first, created["metadata"]["resourceVersion"])
    written = _get(api_client, namespace, "pool")
    assert written["status"] == first
    assert written["spec"] == created["spec"]  # the spec is untouched

    # A field the new status drops is removed (a replace, not a merge).
    assert _write(api_client, namespace, {"observedGeneration": 2}, written["metadata"]["resourceVersion"])
    assert _get(api_client, namespace, "pool")["status"] == {"observedGeneration": 2}


@pytest.mark.usefixtures("pool_crd")
def test_a_pool_changed_since_it_was_read_gets_its_status_after_a_fresh_read(
    api_client: kubernetes.client.ApiClient, namespace: str
) -> None:
    created = _create(api_client, namespace, "pool")
    stale = created["metadata"]["resourceVersion"]
    custom = kubernetes.client.CustomObjectsApi(api_client)
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "pool", {"spec": {"paused": True}})
    assert _get(api_client, namespace, "pool")["metadata"]["resourceVersion"] != stale
    assert _write(api_client, namespace, {"observedGeneration": 7}, stale)
    after = _get(api_client, namespace, "pool")
    assert after["status"] == {"observedGeneration": 7}
    assert after["spec"]["paused"] is True  # the other writer's change stands


@pytest.mark.usefixtures("pool_crd")
def test_a_deleted_pool_is_not_an_error(api_client: kubernetes.client.ApiClient, namespace: str) -> None:
    created = _create(api_client, namespace, "pool")
    custom = kubernetes.client.CustomObjectsApi(api_client)
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "pool")
    assert not _write(api_client, namespace, {"observedGeneration": 1}, created["metadata"]["resourceVersion"])


@pytest.mark.parametrize(
    ("call", "doing"),
    [
        pytest.param("secret", "read Secret", id="secret-read"),
        pytest.param("configmap", "read ConfigMap", id="configmap-read"),
        pytest.param("status", "write the status", id="status-write"),
    ],
)
def test_an_apiserver_error_is_a_kube_error_with_a_reason(call: str, doing: str) -> None:
    # An apiserver answering 503 (overloaded, or a proxy in front of it): a loopback stand-in, as the
    # real one cannot be made to fail on cue. The cycle turns a KubeError into a condition and an
    # Event; anything else would end in kopf's backoff with neither.
    from harness.textserver import TextServer

    from tokenscale.api import ConfigMapKeyRef, SecretKeyRef
    from tokenscale.kube.scale import KubeError

    body = (
        b'{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcdserver: request timed out","code":503}'
    )
    with TextServer(lambda path: (503, "application/json", body)) as server:
        config = kubernetes.client.Configuration()
        config.host = server.url
        client = kubernetes.client.ApiClient(config)
        try:
            with pytest.raises(KubeError) as raised:
                if call == "secret":
                    asyncio.run(pools.read_secret_key(client, "ns", SecretKeyRef(name="s", key="k")))
                elif call == "configmap":
                    asyncio.run(pools.read_configmap_key(client, "ns", ConfigMapKeyRef(name="c", key="k")))
                else:
                    asyncio.run(pools.write_status(client, "ns", "pool", {"observedGeneration": 1}, "7"))
        finally:
            client.close()
    assert doing in str(raised.value) and "503" in str(raised.value) and "request timed out" in str(raised.value)
