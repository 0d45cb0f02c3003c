"""The real operator on the real apiserver, reading a Prometheus that answers garbage (issue 13).

A proxy stands between the operator and the real Prometheus of a simulated fleet: it passes the
answers through, or turns them into one kind of garbage. While the garbage lasts, longer than the
scale-down stabilization window at a load that wants fewer replicas, the operator must not crash,
must hold the replicas, and must say why (MetricsAvailable=False and a MetricsMissing Event); when
the answers are good again it must recover: metrics available, and the scale-down then happens.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from harness.operator_env import (
    OperatorProcess,
    SimulatedFleet,
    condition,
    create_deployment,
    create_pool,
    events_of,
    get_pool,
    pool_manifest,
    replicas_of,
)
from harness.textserver import TextServer
from harness.wait import wait_until

pytestmark = pytest.mark.e2e

LOW_RATE = 2.0  # one replica of each pool meets the objectives: the planner wants 4/3 → 1/1
WINDOW_S = 20.0  # the scale-down stabilization window of operator_env.POOL_SPEC


def _results(body: bytes, change: Callable[[list[Any]], list[Any]]) -> bytes:
    document = json.loads(body)
    result = document.get("data", {}).get("result")
    if isinstance(result, list):
        document["data"]["result"] = change(result)
    return json.dumps(document).encode()


def _with_value(value: str) -> Callable[[list[Any]], list[Any]]:
    return lambda result: [{**r, "value": [r["value"][0], value]} if "value" in r else r for r in result]


GARBAGE: dict[str, tuple[Callable[[bytes], tuple[int, str, bytes]], str]] = {
    # kind: (what the proxy answers instead of Prometheus' answer, what MetricsAvailable's message says)
    "html-error-page": (
        lambda body: (502, "text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
        "HTTP 502",
    ),
    "duplicated-series": (
        lambda body: (200, "application/json", _results(body, lambda result: result + result)),
        "duplicated series",
    ),
    "infinite-values": (
        lambda body: (200, "application/json", _results(body, _with_value("+Inf"))),
        "cannot be a count, a rate or a fraction",
    ),
}


class Proxy:
    """Forwards the operator's queries to the real Prometheus; `garbage` turns answers into garbage."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.garbage: Callable[[bytes], tuple[int, str, bytes]] | None = None
        self.server = TextServer(self.answer)

    def answer(self, path: str) -> tuple[int, str, bytes]:
        route, _, form = path.partition("?")
        request = urllib.request.Request(self.upstream + route, data=form.encode() if form else None)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                body = response.read()
        except urllib.error.HTTPError as err:  # Prometheus' own error answers pass through as they are
            return err.code, "application/json", err.read()
        if self.garbage is not None:
            return self.garbage(body)
        return 200, "application/json", body


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_garbage_from_prometheus_holds_replicas_says_why_and_recovers(
    kind: str, fleet: SimulatedFleet, operator: OperatorProcess, apis: tuple[Any, Any, Any], namespace: str
) -> None:
    apps, custom, core = apis
    answer, says = GARBAGE[kind]
    fleet.set_rate(LOW_RATE)
    create_deployment(apps, namespace, "llama-prefill", 4)
    create_deployment(apps, namespace, "llama-decode", 3)
    proxy = Proxy(fleet.prometheus.url)
    proxy.garbage = answer
    with proxy.server:
        create_pool(custom, namespace, pool_manifest("llama", proxy.server.url))
        operator.start()

        def metrics(status: str) -> dict[str, Any] | None:
            c = condition(get_pool(custom, namespace, "llama"), "MetricsAvailable") or {}
            return c if c.get("status") == status else None

        held = wait_until(lambda: metrics("False"), what="MetricsAvailable=False", timeout_s=30, interval_s=0.5)
        assert held["reason"] == "MetricsMissing" and says in held["message"], held
        assert "\n" not in held["message"]
        since = time.monotonic()
        # Longer than the stabilization window, at a load that wants 1/1: nothing moves on garbage.
        while time.monotonic() - since < WINDOW_S + 8:
            assert (replicas_of(apps, namespace, "llama-prefill"), replicas_of(apps, namespace, "llama-decode")) == (
                4, 3
            ), "scaled on garbage"  # fmt: skip
            time.sleep(1.0)
        assert "MetricsMissing" in {e["reason"] for e in events_of(core, namespace, "llama")}
        assert operator.process is not None and operator.process.alive()

        proxy.garbage = None  # the answers are good again
        wait_until(lambda: metrics("True"), what="MetricsAvailable=True again", timeout_s=30, interval_s=0.5)
        wait_until(lambda: replicas_of(apps, namespace, "llama-prefill") < 4 or None,
                   what="the scale-down the good data allows", timeout_s=WINDOW_S + 40, interval_s=0.5)  # fmt: skip
