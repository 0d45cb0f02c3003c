"""values.schema.json: bad values fail `helm template` (and so `helm install`) with a message naming the key.

Helm validates the merged values against the schema before rendering; each row sets one bad value
and expects helm's schema error for that key. The schema itself must be draft-07, closed at the top
level, and accept the chart's own values.yaml (every default passes).
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml

from .conftest import CHART, HelmTemplate

SCHEMA_ERROR = "values don't meet the specifications of the schema(s)"

BAD_VALUES = [
    pytest.param(
        {"logFormat": "xml"}, 'logFormat: logFormat must be one of the following: "text", "json"', id="log-format-xml"
    ),
    pytest.param(
        {"image": {"tag": 5}}, "image.tag: Invalid type. Expected: string, given: integer", id="image-tag-integer"
    ),
    pytest.param({"replicas": 2}, "Additional property replicas is not allowed", id="unknown-top-level-key"),
    pytest.param({"dryRun": "yes"}, "dryRun: Invalid type. Expected: boolean, given: string", id="dry-run-string"),
    pytest.param(
        {"metrics": {"port": 70000}}, "metrics.port: Must be less than or equal to 65535", id="port-out-of-range"
    ),
    pytest.param(
        {"watchNamespaces": "team-a"},
        "watchNamespaces: Invalid type. Expected: array, given: string",
        id="namespaces-not-a-list",
    ),
    pytest.param(
        {"watchNamespaces": ["Team_A"]}, "watchNamespaces.0: Does not match pattern", id="namespace-not-dns-label"
    ),
    pytest.param(
        {"image": {"pullPolicy": "Sometimes"}},
        "image.pullPolicy: image.pullPolicy must be one of the following",
        id="pull-policy-enum",
    ),
    pytest.param(
        {"serviceMonitor": {"enabeld": True}}, "Additional property enabeld is not allowed", id="misspelt-nested-key"
    ),
    pytest.param(
        {"scaleTargets": [{"apiGroup": "example.com"}]},
        "scaleTargets.0: resources is required",
        id="scale-target-without-resources",
    ),
    pytest.param(
        {"scaleTargets": [{"apiGroup": "example.com", "resources": ["servers/scale"]}]},
        "scaleTargets.0.resources.0: Does not match pattern",
        id="scale-target-with-subresource",
    ),
    pytest.param(
        {"prometheusRule": {"objectiveViolatedFor": "ten minutes"}},
        "prometheusRule.objectiveViolatedFor: Does not match pattern",
        id="alert-duration-not-a-duration",
    ),
    pytest.param(
        {"prometheus": {"url": "prometheus:9090"}},
        "prometheus.url: Does not match pattern",
        id="prometheus-url-without-scheme",
    ),
    pytest.param(
        {"rbac": {"create": "true"}},
        "rbac.create: Invalid type. Expected: boolean, given: string",
        id="rbac-create-string",
    ),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES)
def test_bad_values_fail_with_helms_schema_error(
    helm_template: HelmTemplate, values: dict[str, Any], message: str
) -> None:
    result = helm_template(values)
    assert result.returncode != 0
    assert SCHEMA_ERROR in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    assert result.stdout == ""


def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return loaded


def test_schema_is_draft_07_and_closed_at_the_top() -> None:
    schema = _schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["additionalProperties"] is False


def test_default_values_match_the_schema_key_for_key() -> None:
    schema = _schema()
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)
    # Every documented key has a default, except `global`, which Helm sets for subcharts.
    assert set(schema["properties"]) - {"global"} == set(defaults)


def test_log_format_enum_is_what_the_operator_accepts() -> None:
    assert _schema()["properties"]["logFormat"]["enum"] == ["text", "json"]
