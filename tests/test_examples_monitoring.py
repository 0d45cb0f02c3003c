"""Every example ships monitors that give its pool the series it selects (issue 14).

For each `examples/<name>.yaml`: `examples/monitoring/<name>.podmonitor.yaml` (Prometheus Operator)
and `<name>.scrape.yaml` (plain Prometheus) select the same pods and port, give them the same `job`,
and that job is the one the pool's `metricsLabels` select; every Deployment the pool scales (bar the
Dynamo workers, whose series the pool does not read) has pods the monitors select; the scrape config
passes `promtool check config` (its discovery block aside: see the test). The end-to-end run of the
scrape config in a real Prometheus is tests/e2e/test_install_as_documented.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import binaries

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml"))
MONITORING = ROOT / "examples" / "monitoring"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _sd_label(key: str) -> str:
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_podmonitors_and_the_scrape_config_agree_with_the_pool(example: Path) -> None:
    docs = _docs(example)
    pool = next(d for d in docs if d["kind"] == "InferencePool")
    monitors = _docs(MONITORING / f"{example.stem}.podmonitor.yaml")
    jobs = yaml.safe_load((MONITORING / f"{example.stem}.scrape.yaml").read_text())["scrape_configs"]
    assert [m["metadata"]["name"] for m in monitors] == [j["job_name"] for j in jobs]
    for monitor, job in zip(monitors, jobs, strict=True):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["relabelings"] == [{"action": "replace", "targetLabel": "job", "replacement": job["job_name"]}]
        assert endpoint["path"] == job["metrics_path"]
        keep = job["relabel_configs"][0]
        selector = monitor["spec"]["selector"]["matchLabels"]
        expected = [*(_sd_label(k) for k in selector), "__meta_kubernetes_pod_container_port_name"]
        assert keep["action"] == "keep" and keep["source_labels"] == expected
        assert keep["regex"] == ";".join([*selector.values(), endpoint["port"]])
        copied = {(r["source_labels"][0], r["target_label"]) for r in job["relabel_configs"][1:]}
        assert ("__meta_kubernetes_namespace", "namespace") in copied  # what metrics.labels {namespace} selects
    # The jobs the pool selects are the ones the monitors produce.
    names = {j["job_name"] for j in jobs}
    for role, p in pool["spec"]["pools"].items():
        selected = p.get("metricsLabels", {}).get("job")
        assert selected is None or selected in names, (role, selected, names)
    # The pool's engines are what the monitors select (Dynamo: the frontend, outside the example).
    if pool["spec"].get("metrics", {}).get("engine") != "dynamo":
        for deployment in (d for d in docs if d["kind"] in ("Deployment", "StatefulSet")):
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
            assert any(
                all(labels.get(k) == v for k, v in m["spec"]["selector"]["matchLabels"].items())
                and m["spec"]["podMetricsEndpoints"][0]["port"] in ports
                for m in monitors
            ), deployment["metadata"]["name"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_scrape_config_is_valid_for_prometheus(example: Path, tmp_path: Path) -> None:
    # Debian's Prometheus is built without Kubernetes service discovery (promtool rejects the key
    # outright), so the discovery block is checked by shape and the rest (relabelling) by promtool.
    jobs = yaml.safe_load((MONITORING / f"{example.stem}.scrape.yaml").read_text())["scrape_configs"]
    for job in jobs:
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod", "namespaces": {"names": ["llm"]}}]
        job["static_configs"] = [{"targets": ["127.0.0.1:8000"]}]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": jobs}))
    promtool = binaries.find("promtool")
    result = subprocess.run([str(promtool), "check", "config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_example_sets_a_prometheus_url() -> None:
    for example in EXAMPLES:
        pool = next(d for d in _docs(example) if d["kind"] == "InferencePool")
        assert "url" not in pool["spec"].get("metrics", {}).get("prometheus", {}), example.name
