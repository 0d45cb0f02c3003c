"""README.md's "Install on a cluster" commands, run as written against the test cluster (issue 14).

What is exercised, for real:
- the README's commands themselves, parsed from its first bash block in that section: `kubectl
  create namespace`, `helm install` of the chart with the README's `--set` values, `kubectl apply`
  of the example and of its PodMonitors, `kubectl get tspool`;
- the operator as the chart configured it: the container arguments of the Deployment Helm created
  (`--default-prometheus-url` from `prometheus.url`, leader election in the release namespace) and
  the identity of the chart's ServiceAccount (a token from `kubectl create token`), cluster-wide;
- the example pool as shipped, with no Prometheus URL of its own (it inherits the chart's);
- the shipped plain-Prometheus scrape config (`examples/monitoring/<example>.scrape.yaml`) with its
  relabelling, in a real Prometheus: only the service discovery is replaced;
- `tokenscale simulate --serve-metrics`, the simulated fleet's exporter, standing in for the engines.

What is substituted, and why:
- the Prometheus URL in the README's `helm install` (a Service in a real cluster) becomes the test
  Prometheus on loopback;
- `kubernetes_sd_configs` become `static_configs` whose targets carry the `__meta_kubernetes_*`
  labels Kubernetes service discovery would give the example's pods (from the pod templates of the
  Deployments in the example file the README applies: their labels and container port names), plus
  a pod of another app that the relabelling must drop. There is no kubelet or pod network here (and
  Debian's Prometheus is built without Kubernetes discovery), so every "pod" is the exporter on
  loopback, each role at its own metrics path;
- the Prometheus Operator does not run here: a stand-in PodMonitor CRD (any spec) lets the
  documented `kubectl apply` of the PodMonitors run; that the PodMonitors select the same pods with
  the same labels as the scrape config is checked by tests/test_examples_monitoring.py, not here;
- the operator runs as a local process with the Deployment's arguments (no kubelet to run its pod),
  on free ports instead of the chart's 8080/9090.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from harness.cluster import Cluster, write_kubeconfig
from harness.processes import ManagedProcess, Supervisor, free_port
from harness.prometheus import PrometheusFactory
from harness.resources import apply_crd, delete_namespace
from harness.tools import Helm
from harness.wait import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "vllm-disaggregated-70b"
CLUSTER_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
PODMONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "podmonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "names": {
            "kind": "PodMonitor",
            "plural": "podmonitors",
            "singular": "podmonitor",
            "listKind": "PodMonitorList",
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    }
                },
            }
        ],
    },
}


def readme_install_commands() -> list[list[str]]:
    """The commands of the first bash block under README.md's "## Install on a cluster", split as a shell would."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Install on a cluster", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "README.md: no bash block under 'Install on a cluster'"
    joined = block.group(1).replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _meta_labels(name: str, pod_labels: dict[str, str], port_name: str, container: str) -> dict[str, str]:
    """The labels Kubernetes pod service discovery gives a pod's container port (the ones the config reads)."""
    labels = {
        "__meta_kubernetes_namespace": "llm",
        "__meta_kubernetes_pod_name": name,
        "__meta_kubernetes_pod_container_name": container,
        "__meta_kubernetes_pod_container_port_name": port_name,
    }
    for key, value in pod_labels.items():
        labels["__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)] = value
    return labels


def scrape_configs_with_static_targets(exporter: str) -> list[dict[str, Any]]:
    """The shipped scrape config, its Kubernetes SD replaced by the example's pods as static targets."""
    shipped = yaml.safe_load((ROOT / "examples" / "monitoring" / f"{EXAMPLE}.scrape.yaml").read_text())
    pods = []
    for doc in yaml.safe_load_all((ROOT / "examples" / f"{EXAMPLE}.yaml").read_text()):
        if doc["kind"] != "Deployment":
            continue
        template = doc["spec"]["template"]
        labels = template["metadata"]["labels"]
        for container in template["spec"]["containers"]:
            for port in container.get("ports", []):
                meta = _meta_labels(f"{doc['metadata']['name']}-0", labels, port["name"], container["name"])
                path = f"/metrics/{labels['app.kubernetes.io/component']}"  # the exporter's path for that role
                pods.append({"targets": [exporter], "labels": {**meta, "__metrics_path__": path}})
    # A pod of another app in the same namespace: the relabelling must keep it out of both jobs.
    decoy = _meta_labels("other-0", {"app.kubernetes.io/name": "other", "app.kubernetes.io/component": "decode"},
                         "http", "other")  # fmt: skip
    pods.append({"targets": [exporter], "labels": {**decoy, "__metrics_path__": "/metrics/decode"}})
    jobs = []
    for job in shipped["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod", "namespaces": {"names": ["llm"]}}]
        jobs.append({**job, "static_configs": pods})
    return jobs


@pytest.fixture
def engines(supervisor: Supervisor, tmp_path: Path) -> Iterator[str]:
    """`tokenscale simulate --serve-metrics` for the example: its engines' metrics, address host:port."""
    port = free_port()
    argv = [sys.executable, "-m", "tokenscale.cli", "simulate", "-f", str(ROOT / "examples" / f"{EXAMPLE}.yaml"),
            "--serve-metrics", str(port), "--rate", "6", "--cold-start", "0s"]  # fmt: skip
    process = supervisor.start("engines", argv, tmp_path / "engines.log")

    def serving() -> bool:
        assert process.alive(), (tmp_path / "engines.log").read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics/decode", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    wait_until(serving, what="the simulated engines' metrics", timeout_s=60, interval_s=0.25)
    yield f"127.0.0.1:{port}"
    process.stop(10.0)


def _get_tspool(cluster: Cluster) -> list[dict[str, str]] | None:
    """`kubectl get tspool -n llm` as rows by header, once every pool shows METRICS True and a decision."""
    lines = cluster.kubectl("get", "tspool", "-n", "llm").stdout.splitlines()
    header = lines[0].split()
    rows = [dict(zip(header, line.split(), strict=False)) for line in lines[1:]]
    done = rows and all(r.get("METRICS") == "True" and re.fullmatch(r"\d+/\d+", r.get("PREFILL", "")) for r in rows)
    return rows if done else None


def test_the_readme_install_commands_end_with_a_pool_that_reads_metrics_and_decides(
    cluster: Cluster,
    helm: Helm,
    api_client: kubernetes.client.ApiClient,
    supervisor: Supervisor,
    prometheus_factory: PrometheusFactory,
    engines: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)  # the README's paths are relative to a clone's root
    apps = kubernetes.client.AppsV1Api(api_client)
    custom = kubernetes.client.CustomObjectsApi(api_client)
    apply_crd(api_client, PODMONITOR_CRD)
    operator: ManagedProcess | None = None
    installed = False
    prometheus_url = ""
    try:
        commands = readme_install_commands()
        kinds = [["kubectl", "create"], ["helm", "install"], ["kubectl", "create"], ["kubectl", "apply"],
                 ["kubectl", "apply"], ["kubectl", "get"]]  # fmt: skip
        assert [c[:2] for c in commands] == kinds
        prometheus = prometheus_factory.start(scrape_configs=scrape_configs_with_static_targets(engines))
        prometheus_url = prometheus.url
        *setup, get = commands
        for command in setup:
            if command[0] == "helm":
                substituted = [a.replace(CLUSTER_PROMETHEUS, prometheus_url) for a in command]
                assert substituted != command, "the README's helm install sets prometheus.url"
                helm.run(*substituted[1:], kubeconfig=cluster.kubeconfig_path)
                installed = True
            else:
                cluster.kubectl(*command[1:])
        assert custom.list_namespaced_custom_object("monitoring.coreos.com", "v1", "llm", "podmonitors")["items"]
        prometheus.wait_for_series('vllm:request_success_total{job="llama-70b-decode",namespace="llm"}')
        prometheus.wait_for_series('up{job="llama-70b-prefill",namespace="llm"} == 1')
        assert prometheus.query('up{pod="other-0"}') == [], "the shipped relabelling kept another app's pod"

        # The operator the chart deployed: its arguments, as the chart's ServiceAccount.
        deployment = apps.list_namespaced_deployment("tokenscale").items[0]
        container = deployment.spec.template.spec.containers[0]
        assert f"--default-prometheus-url={prometheus_url}" in container.args
        health, metrics = free_port(), free_port()
        args = [a for a in container.args if not a.startswith(("--health-port=", "--metrics-port="))]
        token = cluster.kubectl("create", "token", deployment.spec.template.spec.service_account_name,
                                "-n", "tokenscale", "--duration=1h").stdout.strip()  # fmt: skip
        kubeconfig = tmp_path / "operator.kubeconfig"
        write_kubeconfig(kubeconfig, server_url=cluster.server_url, ca_path=cluster.ca_path, token=token,
                         namespace="tokenscale")  # fmt: skip
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAME": "tokenscale-0"}
        argv = [sys.executable, "-m", "tokenscale.cli", *args, f"--health-port={health}", f"--metrics-port={metrics}"]
        operator = supervisor.start("operator", argv, tmp_path / "operator.log", env=env)

        assert get == ["kubectl", "get", "tspool", "-n", "llm"]
        rows = wait_until(lambda: _get_tspool(cluster), what="kubectl get tspool: METRICS True and a decision",
                          timeout_s=150, interval_s=2.0)  # fmt: skip
        assert [r["NAME"] for r in rows] == ["llama-70b"]
        pool = custom.get_namespaced_custom_object("tokenscale.dev", "v1alpha1", "llm", "inferencepools", "llama-70b")
        assert "url" not in pool["spec"].get("metrics", {}).get("prometheus", {}), "the example inherits the URL"
        assert pool["status"]["lastDecision"]["reason"], pool["status"]
        log = (tmp_path / "operator.log").read_text()
        assert "Traceback" not in log, log[-4000:]
        # The documented uninstall order's first step, while the operator runs: no pool is left Terminating.
        cluster.kubectl("delete", "tspool", "--all", "-n", "llm", "--wait=true", "--timeout=60s")
        left = custom.list_namespaced_custom_object("tokenscale.dev", "v1alpha1", "llm", "inferencepools")["items"]
        assert left == [], [p["metadata"] for p in left]
    finally:
        # The documented order: the pools while the operator runs (it removes their finalizer), then the release.
        cluster.kubectl("delete", "tspool", "--all", "-n", "llm", "--wait=true", "--timeout=60s", check=False)
        if operator is not None:
            assert operator.stop(10.0) == 0, (tmp_path / "operator.log").read_text()[-4000:]
        if installed:
            helm.run("uninstall", "tokenscale", "-n", "tokenscale", kubeconfig=cluster.kubeconfig_path)
        for namespace in ("llm", "tokenscale"):
            delete_namespace(api_client, namespace)
        kubernetes.client.ApiextensionsV1Api(api_client).delete_custom_resource_definition(
            "podmonitors.monitoring.coreos.com"
        )
