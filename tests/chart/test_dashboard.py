"""The Grafana dashboard (charts/tokenscale/dashboards/tokenscale.json): what it shows and that its queries parse.

Every PromQL query must name only the operator's metrics and their labels, and parse: the queries,
with Grafana's variables substituted, are written as recording rules and checked by `promtool
check rules`. Each part of the dashboard the chart promises (load and forecast, desired/current
replicas per role, TTFT/TPOT observed and predicted vs objective, GPUs, decisions) has its panel.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART, HISTOGRAMS, OPERATOR_METRICS, TARGET_LABELS

DASHBOARD = CHART / "dashboards" / "tokenscale.json"
SELECTOR = re.compile(r"\b(tokenscale_[a-z_]+)(?:\{([^}]*)\})?")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
VARIABLES = {"$namespace": ".*", "$pool": ".*", "$__rate_interval": "5m"}


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _targets() -> list[tuple[str, dict[str, Any]]]:
    return [(panel["title"], target) for panel in _panels() for target in panel["targets"]]


def _metric(name: str) -> str:
    base = name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
    return base if base in HISTOGRAMS else name


def test_queries_use_only_the_operators_metrics_and_labels() -> None:
    for title, target in _targets():
        expr = target["expr"]
        found = SELECTOR.findall(expr)
        assert found, f"{title}: {expr} reads no tokenscale metric"
        for name, matchers in found:
            metric = _metric(name)
            assert metric in OPERATOR_METRICS, f"{title}: unknown metric {name}"
            allowed = OPERATOR_METRICS[metric] | TARGET_LABELS | ({"le"} if metric in HISTOGRAMS else set())
            used = {m.split("=")[0].strip().rstrip("!~") for m in matchers.split(",") if m.strip()}
            assert used <= allowed, f"{title}: {name} has no label {used - allowed}"
            for grouping in GROUPING.findall(expr):
                labels = {label.strip() for label in grouping.split(",")}
                assert labels <= allowed, f"{title}: grouping by {labels - allowed}"


def test_queries_parse(promtool: Path, tmp_path: Path) -> None:
    rules = []
    for index, (_, target) in enumerate(_targets()):
        expr = target["expr"]
        for variable, value in VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"an unknown variable in {target['expr']}"
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [str(promtool), "check", "rules", "queries.yaml"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def _panel_metrics(panel: dict[str, Any]) -> set[str]:
    return {_metric(name) for target in panel["targets"] for name, _ in SELECTOR.findall(target["expr"])}


@pytest.mark.parametrize(
    ("metrics", "legend_label"),
    [
        pytest.param(
            {"tokenscale_request_rate_per_second", "tokenscale_forecast_request_rate_per_second"}, "pool", id="load"
        ),
        pytest.param({"tokenscale_desired_replicas", "tokenscale_current_replicas"}, "role", id="replicas-per-role"),
        pytest.param(
            {
                "tokenscale_observed_ttft_seconds",
                "tokenscale_predicted_ttft_seconds",
                "tokenscale_objective_ttft_seconds",
            },
            "pool",
            id="ttft-vs-objective",
        ),
        pytest.param(
            {
                "tokenscale_observed_tpot_seconds",
                "tokenscale_predicted_tpot_seconds",
                "tokenscale_objective_tpot_seconds",
            },
            "pool",
            id="tpot-vs-objective",
        ),
        pytest.param({"tokenscale_gpus"}, "role", id="gpus"),
        pytest.param({"tokenscale_decisions_total"}, "binding", id="decisions"),
    ],
)
def test_dashboard_has_a_panel_for(metrics: set[str], legend_label: str) -> None:
    panels = [p for p in _panels() if metrics <= _panel_metrics(p)]
    assert len(panels) == 1, f"want one panel showing {sorted(metrics)}, found {[p['title'] for p in panels]}"
    for target in panels[0]["targets"]:
        assert f"{{{{{legend_label}}}}}" in target["legendFormat"], target


def test_dashboard_is_filtered_by_namespace_and_pool() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "pool"):
        assert variables[name]["multi"] is True and variables[name]["includeAll"] is True
    for title, target in _targets():
        if "tokenscale_planner_duration_seconds" in target["expr"]:
            continue  # the planner's histogram has no pool label: all pools together
        assert 'namespace=~"$namespace"' in target["expr"] and 'pool=~"$pool"' in target["expr"], title
    assert {p["datasource"]["uid"] for p in _panels()} == {"${datasource}"}


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = _dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells.get((x, y))}"
                cells[(x, y)] = panel["title"]
