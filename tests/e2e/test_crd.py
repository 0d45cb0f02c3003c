"""The generated CRD and the examples on a real kube-apiserver 1.20.2.

The CRD from crds/ must be accepted through the Python client and become Established; every
document of every file in examples/ must pass `kubectl apply --dry-run=server`, with no field of an
InferencePool pruned; pools that break the schema (enum, minimum, type, required, pattern) must be
rejected with 422 naming the field; and `kubectl get` must show the printer columns, by short name,
full name and category. The 1.20 server drops the CEL rules (`x-kubernetes-validations`) silently:
those are unit-tested with a CEL evaluator in tests/test_crd.py; the rest of the schema is enforced
here by the server.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, cast

import kubernetes
import pytest
import yaml
from harness.cluster import Cluster
from harness.resources import api_error_causes
from kubernetes.client.exceptions import ApiException

from tokenscale import api, crd

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / crd.CRD_FILE_NAME
EXAMPLE_FILES = sorted((ROOT / "examples").glob("*.yaml"))

VALID_POOL: dict[str, Any] = {
    "apiVersion": f"{api.GROUP}/{api.VERSION}",
    "kind": "InferencePool",
    "metadata": {"name": "demo"},
    "spec": {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "mode": "Disaggregated",
        "objectives": {"ttft": {"quantile": 0.9, "target": "500ms"}, "tpot": {"quantile": 0.9, "target": "50ms"}},
        "metrics": {"prometheus": {"url": "http://prometheus:9090"}},
        "pools": {
            "prefill": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo-prefill"},
                "maxReplicas": 4,
            },
            "decode": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo-decode"},
                "minReplicas": 1,
                "maxReplicas": 8,
            },
        },
    },
}


def _without_cel(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_cel(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [_without_cel(v) for v in node]
    return node


def _missing_paths(sent: Any, stored: Any, path: str = "") -> list[str]:
    """Paths of `sent` that the server did not keep as sent (pruned as unknown, or changed)."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [path or "."]
        return [p for k, v in sent.items() for p in _missing_paths(v, stored.get(k), f"{path}.{k}")]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [path]
        return [p for i, v in enumerate(sent) for p in _missing_paths(v, stored[i], f"{path}[{i}]")]
    return [] if sent == stored else [path]


def _create_pool(api_client: kubernetes.client.ApiClient, namespace: str, pool: dict[str, Any]) -> dict[str, Any]:
    objects = kubernetes.client.CustomObjectsApi(api_client)
    return cast(
        dict[str, Any], objects.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, pool)
    )


def test_crd_is_established_with_its_names_and_schema(inferencepool_crd: dict[str, Any]) -> None:
    conditions = {c["type"]: c["status"] for c in inferencepool_crd["status"]["conditions"]}
    assert (conditions["NamesAccepted"], conditions["Established"]) == ("True", "True")
    accepted = inferencepool_crd["status"]["acceptedNames"]
    assert (accepted["kind"], accepted["shortNames"], accepted["categories"]) == (
        "InferencePool",
        ["tspool"],
        ["tokenscale"],
    )
    # The server keeps the whole schema except the CEL rules it does not know (1.20).
    sent = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    stored = inferencepool_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert stored == _without_cel(sent)


def test_valid_pool_is_accepted_and_defaulted(
    inferencepool_crd: dict[str, Any], api_client: kubernetes.client.ApiClient, namespace: str
) -> None:
    created = _create_pool(api_client, namespace, VALID_POOL)
    assert _missing_paths(VALID_POOL["spec"], created["spec"], "spec") == []
    assert created["spec"]["pools"]["prefill"]["minReplicas"] == 1  # a schema default, applied by the server


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


EXAMPLE_FILE_PARAMS = [pytest.param(path, id=path.name) for path in EXAMPLE_FILES]


def test_examples_are_present() -> None:
    assert len(EXAMPLE_FILES) >= 1
    assert any(d["kind"] == "InferencePool" for path in EXAMPLE_FILES for d in _documents(path))


@pytest.mark.parametrize("path", EXAMPLE_FILE_PARAMS)
def test_example_file_is_accepted_by_server_dry_run(
    inferencepool_crd: dict[str, Any], cluster: Cluster, namespace: str, path: Path
) -> None:
    # --validate=false: kubectl's client-side check reads the 1.20 server's OpenAPI, which lacks
    # fields of newer built-in kinds; the server's own validation and pruning is what is tested.
    result = cluster.kubectl(
        "apply", "--dry-run=server", "--validate=false", "-o", "json", "-n", namespace, "-f", str(path)
    )
    answer = json.loads(result.stdout)
    stored = answer["items"] if answer["kind"] == "List" else [answer]
    sent = _documents(path)
    assert [(s["kind"], s["metadata"]["name"]) for s in stored] == [(d["kind"], d["metadata"]["name"]) for d in sent]
    for document, kept in zip(sent, stored, strict=True):
        if document["kind"] == "InferencePool":  # built-in kinds normalise quantities; pools must come back as sent
            assert _missing_paths(document["spec"], kept["spec"], "spec") == [], f"{document['metadata']['name']}"


_DELETE = object()

INVALID_POOLS = [
    pytest.param(("spec", "mode"), "Hybrid", "spec.mode", id="mode-not-in-enum"),
    pytest.param(
        ("spec", "pools", "decode", "minReplicas"), -1, "spec.pools.decode.minReplicas", id="min-replicas-negative"
    ),
    pytest.param(
        ("spec", "objectives", "ttft", "quantile"), "high", "spec.objectives.ttft.quantile", id="quantile-not-a-number"
    ),
    pytest.param(("spec", "model"), _DELETE, "spec.model", id="model-missing"),
    pytest.param(
        ("spec", "objectives", "ttft", "target"), "5 minutes", "spec.objectives.ttft.target", id="target-not-a-duration"
    ),
    pytest.param(
        ("spec", "pools", "prefill", "maxReplicas"),
        "eight",
        "spec.pools.prefill.maxReplicas",
        id="max-replicas-not-an-integer",
    ),
    pytest.param(
        ("spec", "objectives", "tpot", "quantile"), 1.5, "spec.objectives.tpot.quantile", id="quantile-above-one"
    ),
    pytest.param(
        ("spec", "pools", "decode", "scaleTargetRef", "name"),
        _DELETE,
        "spec.pools.decode.scaleTargetRef.name",
        id="scale-target-without-name",
    ),
]


@pytest.mark.parametrize(("path", "value", "field"), INVALID_POOLS)
def test_invalid_pool_is_rejected_with_422_naming_the_field(
    inferencepool_crd: dict[str, Any],
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    path: tuple[str, ...],
    value: object,
    field: str,
) -> None:
    pool = copy.deepcopy(VALID_POOL)
    parent = pool
    for key in path[:-1]:
        parent = parent[key]
    if value is _DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    with pytest.raises(ApiException) as raised:
        _create_pool(api_client, namespace, pool)
    body = str(raised.value.body)
    assert raised.value.status == 422, body
    assert field in body
    assert field in [cause.get("field") for cause in api_error_causes(raised.value)], body


PRINTER_HEADERS = ["NAME", "MODE", "TTFT", "TPOT", "PREFILL", "DECODE", "GPUS", "METRICS", "AGE"]


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param("tspool", id="short-name"),
        pytest.param("inferencepools.tokenscale.dev", id="full-name"),
        pytest.param("tokenscale", id="category"),
    ],
)
def test_kubectl_get_shows_the_printer_columns(
    inferencepool_crd: dict[str, Any],
    api_client: kubernetes.client.ApiClient,
    cluster: Cluster,
    namespace: str,
    resource: str,
) -> None:
    _create_pool(api_client, namespace, VALID_POOL)
    summary = {"ttft": "412ms/500ms", "tpot": "41ms/50ms", "prefill": "2/3", "decode": "3/4", "gpus": 7}
    kubernetes.client.CustomObjectsApi(api_client).patch_namespaced_custom_object_status(
        api.GROUP, api.VERSION, namespace, api.PLURAL, "demo", {"status": {"summary": summary}}
    )
    lines = cluster.kubectl("get", resource, "-n", namespace).stdout.splitlines()
    assert lines[0].split() == PRINTER_HEADERS
    assert len(lines) == 2, lines
    row = lines[1].split()
    assert row[:-1] == ["demo", "Disaggregated", "412ms/500ms", "41ms/50ms", "2/3", "3/4", "7"]
