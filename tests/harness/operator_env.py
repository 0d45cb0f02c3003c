"""The world an operator end-to-end test runs in: a simulated fleet scraped by a real Prometheus, the
`tokenscale run` process against the real apiserver, and the Deployments it scales.

- `SimulatedFleet`: a `LiveFleet` of Llama-3.1-70B (disaggregated, vLLM series) at 1× speed, its
  exporter, and a real Prometheus scraping the prefill and decode pools as jobs `llama-prefill` and
  `llama-decode` every second. `set_rate` changes the load the operator will read.
- `OperatorProcess`: `tokenscale run --namespace NS` as a child process (the way the chart runs it),
  with its health and metrics ports; stop, kill -9 and start again.
- `pool_manifest` / `create_deployment`: an InferencePool pointing at that Prometheus, and the
  Deployments it scales (pods stay Pending: there is no kubelet, which is fine, the planner counts
  pending replicas as committed capacity).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes

from harness.processes import ManagedProcess, Supervisor, free_port
from harness.prometheus import Prometheus, PrometheusFactory, static_scrape_config
from harness.wait import wait_until
from tokenscale import api
from tokenscale.planner import profiles
from tokenscale.sim import exporter, loop, workload

MODEL = "meta-llama/Llama-3.1-70B-Instruct"
GROUP, VERSION, PLURAL = "tokenscale.dev", "v1alpha1", "inferencepools"

POOL_SPEC: dict[str, Any] = {
    "model": MODEL,
    "mode": "Disaggregated",
    "objectives": {"ttft": {"quantile": 0.9, "target": "600ms"}, "tpot": {"quantile": 0.9, "target": "50ms"}},
    "metrics": {"prometheus": {"url": "http://127.0.0.1:1", "timeout": "3s"}, "engine": "vllm", "window": "10s"},
    "modelShape": {"preset": "Llama-3.1-70B"},
    "pools": {
        "prefill": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-prefill"},
            "metricsLabels": {"job": "llama-prefill"},
            "gpusPerReplica": 4,
            "minReplicas": 1,
            "maxReplicas": 8,
            "hardware": {"gpu": "H100"},
        },
        "decode": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-decode"},
            "metricsLabels": {"job": "llama-decode"},
            "gpusPerReplica": 4,
            "minReplicas": 1,
            "maxReplicas": 16,
            "hardware": {"gpu": "H200"},
        },
    },
    "forecast": {"method": "holt", "coldStart": "10s"},
    "behavior": {"scaleDown": {"stabilizationWindow": "20s"}},
    "interval": "3s",
}


def pool_manifest(name: str, prometheus_url: str, targets: str = "llama", **spec_overrides: Any) -> dict[str, Any]:
    """A pool scaling Deployments `<targets>-prefill` and `<targets>-decode`."""
    spec = copy.deepcopy(POOL_SPEC)
    spec["metrics"]["prometheus"]["url"] = prometheus_url
    spec["pools"]["prefill"]["scaleTargetRef"]["name"] = f"{targets}-prefill"
    spec["pools"]["decode"]["scaleTargetRef"]["name"] = f"{targets}-decode"
    spec.update(spec_overrides)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferencePool", "metadata": {"name": name}, "spec": spec}


class SimulatedFleet:
    """A 1× LiveFleet with a vLLM exporter and a Prometheus scraping it."""

    def __init__(self, factory: PrometheusFactory, rate_per_s: float) -> None:
        spec = api.InferencePoolSpec.model_validate(pool_manifest("x", "http://unused")["spec"])
        perf = profiles.resolve_all(spec)
        setup = loop.SimSetup(spec, workload.make_workload("live", [], [], []), perf, perf, 0.0)
        config = loop.fleet_config(setup, {"prefill": 2, "decode": 4}, cold_start=False)
        self.live = exporter.LiveFleet(config, rate_per_s, speedup=1.0, seed=7)
        self.server = exporter.MetricsServer(self.live, model=MODEL, engine="vllm")
        self.live.start()
        self.server.start()
        target = f"127.0.0.1:{self.server.port}"
        self.prometheus: Prometheus = factory.start(
            scrape_configs=[
                static_scrape_config("llama-prefill", [target], metrics_path="/metrics/prefill"),
                static_scrape_config("llama-decode", [target], metrics_path="/metrics/decode"),
            ]
        )
        self.prometheus.wait_for_series('vllm:request_success_total{job="llama-decode"}')

    def set_rate(self, rate_per_s: float) -> None:
        self.live.set_rate(rate_per_s)

    def close(self) -> None:
        self.prometheus.stop()
        self.server.close()
        self.live.stop()


class OperatorProcess:
    """`tokenscale run` for one namespace, as a child process logging to a file."""

    def __init__(
        self, supervisor: Supervisor, kubeconfig: Path, namespace: str, log_path: Path, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.supervisor = supervisor
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_path
        self.extra_args = extra_args
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.process: ManagedProcess | None = None

    def start(self) -> OperatorProcess:
        ports = ["--health-port", str(self.health_port), "--metrics-port", str(self.metrics_port)]
        argv = [sys.executable, "-m", "tokenscale.cli", "run", "--namespace", self.namespace, *ports, *self.extra_args]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "POD_NAME": self.identity()}
        self.process = self.supervisor.start("tokenscale-operator", argv, self.log_path, env=env)
        wait_until(self._healthy, what="the operator's /healthz", timeout_s=60, interval_s=0.25)
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if not self.process.alive():
            raise AssertionError(f"the operator exited:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    def identity(self) -> str:
        """The name it gives itself as a Lease holder (POD_NAME in a pod): its log file's stem."""
        return self.log_path.stem

    def stop(self) -> int:
        assert self.process is not None
        return self.process.stop(10.0)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tracebacks(self) -> list[str]:
        return [block for block in self.log().split("Traceback (most recent call last)")[1:]]


def deployment_manifest(
    name: str,
    replicas: int,
    image: str = "registry.invalid/vllm:test",
    resources: dict[str, Any] | None = None,
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Deployment of `replicas` pods labelled app=`name` with one container "engine" (its image is never
    pulled: the test cluster has no kubelet), optionally with resources and a node selector."""
    labels = {"app": name}
    container: dict[str, Any] = {"name": "engine", "image": image}
    if resources is not None:
        container["resources"] = resources
    pod: dict[str, Any] = {"containers": [container]}
    if node_selector is not None:
        pod = {"nodeSelector": node_selector, **pod}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def create_deployment(apps: kubernetes.client.AppsV1Api, namespace: str, name: str, replicas: int) -> None:
    apps.create_namespaced_deployment(namespace, deployment_manifest(name, replicas))


def replicas_of(apps: kubernetes.client.AppsV1Api, namespace: str, name: str) -> int:
    return int(apps.read_namespaced_deployment_scale(name, namespace).spec.replicas)


def get_pool(custom: kubernetes.client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    return dict(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))  # type: ignore[arg-type]


def create_pool(custom: kubernetes.client.CustomObjectsApi, namespace: str, manifest: Mapping[str, Any]) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, dict(manifest))


def condition(pool: Mapping[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in pool.get("status", {}).get("conditions", []):
        if c["type"] == ctype:
            return dict(c)
    return None


def events_of(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> list[dict[str, str]]:
    found = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [{"type": e.type, "reason": e.reason, "message": e.message} for e in found.items]


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)[:4000]
