"""The operator on a real engine: `tokenscale run` against the real kube-apiserver plans an aggregated
pool from a real Prometheus scraping a real vLLM (tests/harness/engine.py) under a replayed load,
and writes its decision: status, conditions, the Deployment's replicas through /scale, an Event.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import numpy as np
import pytest
from harness.engine import VllmServer, replay
from harness.operator_env import (
    GROUP,
    VERSION,
    OperatorProcess,
    condition,
    create_deployment,
    create_pool,
    events_of,
    get_pool,
    replicas_of,
)
from harness.prometheus import PrometheusFactory, static_scrape_config
from harness.wait import wait_until

RATE_PER_S = 4.0
LOAD_S = 60.0  # the load outlasts the window before the first decision by half a minute

SPEC: dict[str, Any] = {
    "model": "meta-llama/Llama-3.1-8B-Instruct",  # the name the harness's engine serves
    "mode": "Aggregated",
    "objectives": {"ttft": {"quantile": 0.9, "target": "500ms"}, "tpot": {"quantile": 0.9, "target": "40ms"}},
    "metrics": {"prometheus": {"url": "http://127.0.0.1:1", "timeout": "3s"}, "engine": "vllm", "window": "30s"},
    "pools": {
        "aggregated": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-8b"},
            "metricsLabels": {"job": "vllm-8b"},
            "minReplicas": 1,
            "maxReplicas": 4,
        }
    },
    "forecast": {"method": "holt", "coldStart": "10s"},
    "interval": "3s",
}


def test_the_operator_plans_from_a_real_engine(
    vllm_engine: VllmServer,
    prometheus_factory: PrometheusFactory,
    operator: OperatorProcess,
    apis: tuple[Any, Any, Any],
    namespace: str,
) -> None:
    apps, custom, core = apis
    prom = prometheus_factory.start(scrape_configs=[static_scrape_config("vllm-8b", [vllm_engine.target])])
    prom.wait_for_series('up{job="vllm-8b"} == 1')
    rng = np.random.default_rng(4)
    arrivals = np.cumsum(rng.exponential(1.0 / RATE_PER_S, int(RATE_PER_S * LOAD_S)))
    arrivals = arrivals[arrivals < LOAD_S]
    isl = rng.integers(100, 1500, arrivals.size)
    osl = rng.integers(8, 64, arrivals.size)
    load = threading.Thread(target=replay, args=(vllm_engine, arrivals, isl, osl), daemon=True)
    load.start()
    try:
        create_deployment(apps, namespace, "llama-8b", 1)
        spec = copy.deepcopy(SPEC)
        spec["metrics"]["prometheus"]["url"] = prom.url
        manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferencePool", "metadata": {"name": "llama-8b"}}
        create_pool(custom, namespace, {**manifest, "spec": spec})
        # One metrics window of load in Prometheus before the first cycle. 30 s, not less: the count of
        # Poisson arrivals at 4 req/s in a window of 10 s has a 16% standard deviation, and the ±30%
        # check below then fails one run in twenty (it did); in 30 s it is 9%.
        time.sleep(31.0)
        operator.start()

        def planned() -> dict[str, Any] | None:
            pool = get_pool(custom, namespace, "llama-8b")
            metrics = condition(pool, "MetricsAvailable")
            decided = pool.get("status", {}).get("lastDecision", {}).get("reason")
            return pool if metrics and metrics["status"] == "True" and decided else None

        pool = wait_until(planned, what="a decision from the engine's metrics", timeout_s=40, interval_s=0.5)
        status = pool["status"]
        # The offered load the operator read is the load the client is sending.
        assert status["observation"]["requestRatePerSecond"] == pytest.approx(RATE_PER_S, rel=0.3)
        assert status["observation"]["islMeanTokens"] == pytest.approx(float(isl.mean()), rel=0.2)
        desired = status["pools"]["aggregated"]["desiredReplicas"]
        assert 1 <= desired <= 4
        wait_until(
            lambda: replicas_of(apps, namespace, "llama-8b") == desired or None,
            what="the Deployment at the desired count",
            timeout_s=15,
            interval_s=0.5,
        )
        if desired > 1:
            wait_until(
                lambda: "ScaledUp" in {e["reason"] for e in events_of(core, namespace, "llama-8b")} or None,
                what="a ScaledUp Event",
                timeout_s=15,
                interval_s=0.5,
            )
        print(f"\noperator on the real engine: {status['lastDecision']['reason']}")
    finally:
        load.join(timeout=300)
        prom.stop()
