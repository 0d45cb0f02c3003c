"""The generated CRD: in step with api.py, structural, described, and its CEL rules behave.

The 1.20 test API server drops `x-kubernetes-validations`, so every CEL rule is evaluated here with
cel-python against the schema node it sits on, after applying the schema's defaults the way the API
server does before validation.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml

from tokenscale import crd

NEEDS_POOL_LABELS = (
    "mode Disaggregated with engine vllm, sglang or trtllm needs different, non-empty pools.prefill.metricsLabels and "
    "pools.decode.metricsLabels (e.g. {job: llama-prefill}), so that the prefill engines' series are told apart"
)

ROOT = Path(__file__).resolve().parents[1]
CRD_PATH = ROOT / "crds" / crd.CRD_FILE_NAME


def schema() -> dict[str, Any]:
    manifest = crd.crd_manifest()
    root: dict[str, Any] = manifest["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def test_crd_file_matches_api_models() -> None:
    assert CRD_PATH.read_text() == crd.crd_yaml(), "crds/ is stale: run `tokenscale crds > crds/...yaml`"


def _walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        out += _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_schema_is_structural_and_described() -> None:
    for path, node in _walk(schema(), ""):
        assert "type" in node, f"{path} has no type"
        # List items and map values are described by their field; the root metadata may carry
        # nothing but its type (the API server rejects more).
        if not path.endswith(("[]", "{}")) and path != ".metadata":
            assert node.get("description"), f"{path} has no description"
        for banned in ("anyOf", "oneOf", "allOf", "$ref", "title", "const"):
            assert banned not in node, f"{path} carries {banned}"
        if "properties" in node:
            assert "additionalProperties" not in node, f"{path}: properties and additionalProperties together"


def test_crd_has_status_subresource_and_printer_columns() -> None:
    version = crd.crd_manifest()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names == ["Mode", "TTFT", "TPOT", "Prefill", "Decode", "GPUs", "Metrics", "Age"]
    assert crd.crd_manifest()["spec"]["names"]["shortNames"] == ["tspool"]


# --- CEL -------------------------------------------------------------------------------------


def _apply_defaults(node: dict[str, Any], value: Any) -> Any:
    if isinstance(value, dict) and "properties" in node:
        for name, sub in node["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = _apply_defaults(sub, value[name])
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_apply_defaults(node["items"], v) for v in value]
    return value


def _to_cel(node: dict[str, Any], value: Any) -> Any:
    """Convert JSON to CEL values with the schema's types (a `number` is a double, as in Kubernetes)."""
    kind = node.get("type")
    if kind == "number":
        return celpy.celtypes.DoubleType(float(value))
    if kind == "integer":
        return celpy.celtypes.IntType(int(value))
    if kind == "object" and isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties", {"type": "string"})
        return celpy.celtypes.MapType(
            {celpy.celtypes.StringType(k): _to_cel(props.get(k, extra), v) for k, v in value.items()}
        )
    if kind == "array":
        return celpy.celtypes.ListType([_to_cel(node["items"], v) for v in value])
    return celpy.json_to_cel(value)


def cel_violations(obj: dict[str, Any]) -> list[str]:
    """Messages of every CEL rule the object breaks, evaluated at the node each rule sits on."""
    env = celpy.Environment()
    root = schema()
    obj = _apply_defaults(root, copy.deepcopy(obj))
    messages: list[str] = []

    def visit(node: dict[str, Any], value: Any) -> None:
        if value is None:
            return
        for rule in node.get("x-kubernetes-validations", []):
            program = env.program(env.compile(rule["rule"]))
            result = program.evaluate({"self": _to_cel(node, value)})
            assert isinstance(result, celpy.celtypes.BoolType), f"rule {rule['rule']} gave {result!r}"
            if not result:
                messages.append(rule["message"])
        if isinstance(value, dict):
            for name, sub in node.get("properties", {}).items():
                visit(sub, value.get(name))
        if isinstance(value, list) and isinstance(node.get("items"), dict):
            for item in value:
                visit(node["items"], item)

    visit(root, obj)
    return messages


def _pool(**changes: Any) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "examples" / "vllm-disaggregated-70b.yaml").read_text().split("\n---")[0])
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = doc
        for p in parents:
            target = target.setdefault(p, {})
        if value is _DELETE:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return doc


_DELETE = object()


def _aggregated_pool(**spec_changes: Any) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "examples" / "vllm-aggregated-8b.yaml").read_text().split("\n---")[0])
    doc["spec"].update(spec_changes)
    return doc


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        pytest.param(_pool(), [], id="valid-disaggregated"),
        pytest.param(_aggregated_pool(), [], id="valid-aggregated-minimal-with-defaults"),
        pytest.param(
            _pool(
                spec__pools__decode={
                    "scaleTargetRef": {"name": "d"},
                    "metricsLabels": {"job": "d"},
                    "minReplicas": 5,
                    "maxReplicas": 3,
                }
            ),
            ["minReplicas must be less than or equal to maxReplicas"],
            id="min-greater-than-max",
        ),
        pytest.param(
            _pool(
                spec__pools__decode={"scaleTargetRef": {"name": "d"}, "metricsLabels": {"job": "d"}, "maxReplicas": 3}
            ),
            [],
            id="min-defaults-to-one",
        ),
        pytest.param(
            _pool(spec__objectives__ttft={"quantile": 1.0, "target": "1s"}),
            ["quantile must be strictly between 0 and 1, e.g. 0.9 for p90"],
            id="quantile-one",
        ),
        pytest.param(
            _pool(spec__objectives__tpot={"quantile": 0, "target": "50ms"}),
            ["quantile must be strictly between 0 and 1, e.g. 0.9 for p90"],
            id="quantile-zero-as-integer",
        ),
        pytest.param(
            _pool(spec__objectives__tpot={"quantile": 0.9, "target": "0ms"}),
            ["target must be a positive duration such as '500ms' or '30s'"],
            id="zero-target",
        ),
        pytest.param(
            _pool(spec__interval="0s"),
            ["interval must be a positive duration such as '500ms' or '30s'"],
            id="zero-interval",
        ),
        pytest.param(
            _pool(spec__pools__decode=_DELETE),
            ["mode Disaggregated needs pools.prefill and pools.decode, and no pools.aggregated"],
            id="disaggregated-without-decode",
        ),
        pytest.param(
            _aggregated_pool(mode="Disaggregated"),
            ["mode Disaggregated needs pools.prefill and pools.decode, and no pools.aggregated"],
            id="disaggregated-with-aggregated-pool",
        ),
        pytest.param(
            _pool(spec__mode="Aggregated"),
            ["mode Aggregated needs pools.aggregated, and no pools.prefill or pools.decode"],
            id="aggregated-with-prefill-and-decode",
        ),
        pytest.param(
            _pool(spec__gpuBudget=8),
            ["gpuBudget is smaller than the GPUs the pools' minReplicas already need"],
            id="budget-below-minimum",
        ),
        pytest.param(_pool(spec__gpuBudget=12), [], id="budget-equal-to-minimum"),
        pytest.param(
            _pool(spec__metrics={"prometheus": {"url": "http://p:9090"}, "engine": "custom"}),
            ["engine 'custom' needs metrics.queries with the PromQL of every signal"],
            id="custom-engine-without-queries",
        ),
        pytest.param(
            _pool(spec__metrics={"prometheus": {"url": "http://p:9090", "timeout": "0s"}}),
            ["timeout must be a positive duration such as '500ms' or '30s'"],
            id="zero-timeout",
        ),
        pytest.param(
            _pool(spec__pools__decode={"scaleTargetRef": {"name": "d"}, "maxReplicas": 3}),
            [NEEDS_POOL_LABELS],
            id="disaggregated-vllm-without-decode-metrics-labels",
        ),
        pytest.param(
            _pool(
                spec__pools__decode={
                    "scaleTargetRef": {"name": "d"},
                    "metricsLabels": {"job": "llama-70b-prefill"},
                    "maxReplicas": 3,
                }
            ),
            [NEEDS_POOL_LABELS],
            id="disaggregated-vllm-same-labels-for-both-pools",
        ),
        pytest.param(
            _pool(
                spec__metrics={"prometheus": {"url": "http://p:9090"}, "engine": "dynamo"},
                spec__pools__decode={"scaleTargetRef": {"name": "d"}, "maxReplicas": 3},
            ),
            [],
            id="disaggregated-dynamo-frontend-needs-no-pool-labels",
        ),
        pytest.param(
            _pool(spec__forecast={"quantile": 1.5}),
            ["forecast.quantile must be strictly between 0 and 1"],
            id="forecast-quantile",
        ),
    ],
)
def test_cel_rules(doc: dict[str, Any], expected: list[str]) -> None:
    assert cel_violations(doc) == expected


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(
            _pool(
                spec__pools__decode={
                    "scaleTargetRef": {"name": "d"},
                    "metricsLabels": {"job": "d"},
                    "minReplicas": 5,
                    "maxReplicas": 3,
                }
            ),
            id="min-greater-than-max",
        ),
        pytest.param(_pool(spec__objectives__tpot={"quantile": 0.9, "target": "0ms"}), id="zero-target"),
        pytest.param(_pool(spec__pools__decode=_DELETE), id="disaggregated-without-decode"),
        pytest.param(_pool(spec__mode="Aggregated"), id="aggregated-with-prefill-and-decode"),
        pytest.param(_pool(spec__gpuBudget=8), id="budget-below-minimum"),
        pytest.param(_pool(spec__interval="0s"), id="zero-interval"),
        pytest.param(
            _pool(spec__pools__decode={"scaleTargetRef": {"name": "d"}, "maxReplicas": 3}),
            id="decode-without-metrics-labels",
        ),
    ],
)
def test_pydantic_rejects_what_cel_rejects(doc: dict[str, Any]) -> None:
    """The operator and `tokenscale validate` enforce the same cross-field rules as admission."""
    from pydantic import ValidationError

    from tokenscale import api

    assert cel_violations(doc)
    with pytest.raises(ValidationError):
        api.InferencePool.model_validate(doc)
