"""Generate the InferencePool CustomResourceDefinition from the pydantic models in `tokenscale.api`.

Called by `tokenscale crds` and by the test that keeps `crds/` in step with `api.py`. The pydantic
JSON schema is rewritten into a Kubernetes structural schema: references inlined, `anyOf [X, null]`
collapsed to X, titles dropped, every property keeping its description, and the CEL rules
(`x-kubernetes-validations`) carried from the models.
"""

from __future__ import annotations

from typing import Any

import yaml

from tokenscale import api

CRD_FILE_NAME = f"{api.GROUP}_{api.PLURAL}.yaml"

_DROP_KEYS = {"title", "default"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Inline `$ref`s and rewrite a pydantic JSON-schema node into an OpenAPI v3 structural node."""
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {node}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        return _structural({**options[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            # Scalar defaults stay (the API server applies them); object defaults would duplicate
            # the nested leaves' own defaults.
            # An empty-string default is rejected by 1.20 servers ("null": must be of type string).
            if key == "default" and not isinstance(value, dict | list) and value is not None and value != "":
                out[key] = value
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs)
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "additionalProperties" and value is False:
            # Structural schemas forbid `additionalProperties: false`; unknown fields are pruned
            # by the API server and rejected by `kubectl apply` and `tokenscale validate`.
            continue
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
    return out


def _schema_of(model: type[api.ApiModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _structural(raw, defs)
    return schema


def _check_descriptions(node: dict[str, Any], path: str) -> None:
    for name, sub in node.get("properties", {}).items():
        if not sub.get("description") and f"{path}.{name}" != ".metadata":
            raise ValueError(f"{path}.{name} has no description: add Field(description=...) in api.py")
        _check_descriptions(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        _check_descriptions(node["items"], f"{path}[]")


def crd_manifest() -> dict[str, Any]:
    """The CRD as a dict, ready for YAML or the apiextensions API."""
    spec_schema = _schema_of(api.InferencePoolSpec)
    status_schema = _schema_of(api.InferencePoolStatus)
    spec_schema["description"] = api.InferencePoolSpec.__doc__
    status_schema["description"] = api.InferencePoolStatus.__doc__
    root = {
        "type": "object",
        "description": api.InferencePool.__doc__,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "tokenscale.dev/v1alpha1"},
            "kind": {"type": "string", "description": "InferencePool"},
            # The API server allows nothing but the type on the root metadata (name/generateName).
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    _check_descriptions(root, "")
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": [api.SHORT_NAME],
                "categories": [api.CATEGORY],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": api.InferencePool.printer_columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    """A dumper that writes repeated sub-schemas out in full: anchors confuse readers of a CRD."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def crd_yaml() -> str:
    """The CRD as the YAML document kept in `crds/`."""
    header = "# Generated by `tokenscale crds` from operator/tokenscale/api.py. Do not edit.\n"
    return header + yaml.dump(crd_manifest(), Dumper=_NoAliasDumper, sort_keys=False, width=120)
