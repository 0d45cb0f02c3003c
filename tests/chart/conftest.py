"""Fixtures for the Helm chart tests: render the chart under a values set, and find promtool.

`render(values)` runs `helm template` (with the CRDs) for release `ts` in namespace
`tokenscale-system` and returns the documents as a `Rendered`; a values set is rendered once per
session. `helm_template(values)` returns the completed process without checking it, for the tests of
values the schema must reject. `promtool` is Prometheus's rule checker (Debian `prometheus` package).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import binaries
from harness.tools import Helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tokenscale"
RELEASE = "ts"
RELEASE_NAMESPACE = "tokenscale-system"
FULLNAME = f"{RELEASE}-tokenscale"


@dataclass(frozen=True)
class Rendered:
    """The objects `helm template` printed for one values set."""

    documents: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.documents if d["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
        return found[0]

    def kinds(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for document in self.documents:
            counts[document["kind"]] = counts.get(document["kind"], 0) + 1
        return counts


HelmTemplate = Callable[[dict[str, Any]], subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def helm_template(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> HelmTemplate:
    """`helm template` of the chart with `values` (a values file), not checked: the caller reads the result."""
    values_dir = tmp_path_factory.mktemp("values")

    def run(values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        text = json.dumps(values, sort_keys=True)  # JSON is YAML: the values file as written
        path = values_dir / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
        path.write_text(text)
        return helm.run(
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            RELEASE_NAMESPACE,
            "--include-crds",
            "--values",
            str(path),
            check=False,
        )

    return run


@pytest.fixture(scope="session")
def render(helm_template: HelmTemplate) -> Callable[[dict[str, Any]], Rendered]:
    """The chart's objects under `values`; a failed render fails the test with helm's message."""
    cache: dict[str, Rendered] = {}

    def run(values: dict[str, Any]) -> Rendered:
        key = json.dumps(values, sort_keys=True)
        if key not in cache:
            result = helm_template(values)
            assert result.returncode == 0, f"helm template failed with values {key}:\n{result.stderr}"
            cache[key] = Rendered([d for d in yaml.safe_load_all(result.stdout) if d])
        return cache[key]

    return run


@pytest.fixture(scope="session")
def promtool() -> Path:
    try:
        return binaries.find("promtool")
    except binaries.MissingBinaryError as err:
        message = str(err)
    pytest.fail(message, pytrace=False)


# The operator's metrics and their labels, as its contract states them (histograms add `le` to
# their `_bucket` series). The dashboard and the alerts may use these and nothing else.
OPERATOR_METRICS: dict[str, frozenset[str]] = {
    **{
        f"tokenscale_{name}": frozenset({"namespace", "pool", "role"})
        for name in ("desired_replicas", "current_replicas", "ready_replicas", "gpus")
    },
    **{
        f"tokenscale_{kind}_{signal}_seconds": frozenset({"namespace", "pool"})
        for kind in ("predicted", "observed", "objective")
        for signal in ("ttft", "tpot")
    },
    "tokenscale_request_rate_per_second": frozenset({"namespace", "pool"}),
    "tokenscale_forecast_request_rate_per_second": frozenset({"namespace", "pool"}),
    "tokenscale_condition": frozenset({"namespace", "pool", "type", "status"}),
    "tokenscale_decisions_total": frozenset({"namespace", "pool", "role", "binding"}),
    "tokenscale_scaling_actions_total": frozenset({"namespace", "pool", "role", "direction"}),
    "tokenscale_prometheus_query_errors_total": frozenset({"namespace", "pool", "reason"}),
    "tokenscale_planner_duration_seconds": frozenset(),
    "tokenscale_reconcile_duration_seconds": frozenset({"namespace", "pool"}),
}
HISTOGRAMS = frozenset({"tokenscale_planner_duration_seconds", "tokenscale_reconcile_duration_seconds"})
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
