"""Session-wide fixtures: the real components the tests run against, and a leak check for every test.

- `cluster` (session): etcd + kube-apiserver 1.20.2 + kube-controller-manager on loopback, a
  `harness.cluster.Cluster` (`api_client()`, `kubectl(...)`, `restart_apiserver()`, logs), with
  `KUBECONFIG` exported before any client reads it. `api_client` (session) is one client for it and
  `namespace` a fresh `t-<random>` namespace per test, deleted afterwards. Tests using any of them
  are marked `e2e`.
- `prometheus_factory` (session): starts real Prometheus servers, `prometheus_factory([targets])`.
  A server started while a test runs is stopped when the test ends; one started by a session
  fixture when the session ends. Tests using it are marked `prometheus`.
- `vllm_engine` (session): a real vLLM (CPU build) serving a tiny random-weight Llama on loopback,
  started once (22–66 s) and stopped when the session ends; tests using it are marked `engine`.
  `engine_figures` (session) is a list the engine tests append their measured figures to; they are
  printed at the end of the run, pass or fail ("real-engine figures"), so a CI log shows them.
- `helm` (session): Helm 3.18 with private homes; `supervisor` (per test) owns processes a test starts.
- `leak_check` (autouse): fails a test that leaves child processes, multiprocessing children or
  non-daemon threads behind (STYLE.md rule 31), after stopping the leftovers.

A missing program fails the test with the command that installs it (never a skip: STYLE.md rule 30,
TESTING.md). When a test that used the cluster fails, the end of each component's log is added to
its report. The helpers live in tests/harness/.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import kubernetes
import pytest
from harness import binaries
from harness.cluster import Cluster, ClusterStartError, start_cluster
from harness.engine import VllmServer, start_vllm
from harness.leaks import Snapshot
from harness.processes import Supervisor
from harness.prometheus import PrometheusFactory
from harness.resources import create_namespace, delete_namespace
from harness.tools import Helm

_CLUSTER = pytest.StashKey[Cluster]()
_CLUSTER_FIXTURES = frozenset({"cluster", "api_client", "namespace"})
_PROMETHEUS_FIXTURES = frozenset({"prometheus_factory"})
_ENGINE_FIXTURES = frozenset({"vllm_engine"})
_ENGINE_FIGURES = pytest.StashKey[list[str]]()


def _require(name: str) -> Path:
    """The program's path, or a test failure that says how to install it."""
    try:
        return binaries.find(name)
    except binaries.MissingBinaryError as err:
        message = str(err)
    pytest.fail(message, pytrace=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the real components they use, so `-m e2e` / `-m prometheus` select them; and run
    the modules whose tests time the real engine, and need no cluster, first.

    First, so before the test cluster starts: late in a full run, with its apiserver, etcd and
    controller manager up, the engine ran about 30% slower than when its tests ran alone
    (`tokenscale profile`'s batch-12 decode step 7.3 ms against 5.2–5.8 ms). Two full CI runs, late
    and first: that step 7.3 and 4.8 ms; the simulator's p90 TTFT against the engine's −37/−52/−60/−42%
    and −19/−14/−3/−20% (light, medium, heavy, bursts), the planner's p90 per-request TPOT −23/−15/−23%
    and −7/−17/−5%; each run 24 minutes. The sort is stable, so the order is otherwise kept and
    module-scoped fixtures still set up once per module.
    """
    engine_modules, cluster_modules = set(), set()
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        module = item.nodeid.split("::")[0]
        if names & _CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.e2e)
            cluster_modules.add(module)
        if names & _PROMETHEUS_FIXTURES:
            item.add_marker(pytest.mark.prometheus)
        if names & _ENGINE_FIXTURES:
            item.add_marker(pytest.mark.engine)
            engine_modules.add(module)
    first = engine_modules - cluster_modules
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in first)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    cluster = item.config.stash.get(_CLUSTER, None)
    # Only for the test's own failures: a shared fixture's set-up error repeats in every test that uses it.
    used_cluster = set(getattr(item, "fixturenames", ())) & _CLUSTER_FIXTURES
    if report.failed and report.when == "call" and cluster is not None and used_cluster:
        report.sections.append(("test cluster logs (tail)", cluster.log_report(max_lines=30)))
    return report


# --- processes and leaks ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def session_supervisor() -> Iterator[Supervisor]:
    """Owns the processes of session-scoped fixtures; stops whatever is left at the end."""
    supervisor = Supervisor()
    yield supervisor
    supervisor.stop_all()


@pytest.fixture(autouse=True)
def leak_check(request: pytest.FixtureRequest, session_supervisor: Supervisor) -> Iterator[None]:
    """Fail a test that leaves child processes or non-daemon threads behind (STYLE.md rule 31).

    Runs before and after every other fixture of the test, so anything a function-scoped fixture
    started and stopped again is fine; Prometheus servers started during the test are stopped here.
    """
    factory: PrometheusFactory | None = None
    if "prometheus_factory" in request.fixturenames:
        factory = request.getfixturevalue("prometheus_factory")
    mark = factory.started_count() if factory is not None else 0
    before = Snapshot.take()
    yield
    if factory is not None:
        factory.stop_started_since(mark)
    problems = before.leftovers(expected_pids=session_supervisor.pids())
    if problems:
        pytest.fail("the test left these behind:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    """Owns processes a single test starts; stops them when the test ends (before the leak check)."""
    per_test = Supervisor()
    yield per_test
    per_test.stop_all()


# --- the Kubernetes control plane ------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, session_supervisor: Supervisor, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """etcd + kube-apiserver + kube-controller-manager for the whole session; KUBECONFIG points at it."""
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "openssl", "kubectl"):
        _require(name)
    work_dir = tmp_path_factory.mktemp("cluster")
    started: Cluster | None = None
    try:
        started = start_cluster(session_supervisor, work_dir)
    except ClusterStartError as err:
        failure = f"the test cluster did not start (logs in {work_dir / 'logs'}):\n{err}"
    if started is None:
        pytest.fail(failure, pytrace=False)
    request.config.stash[_CLUSTER] = started
    # The kubernetes client reads $KUBECONFIG when it is imported, and kopf logs in from the default
    # location: set both, for code under test that loads the default configuration.
    previous_env = os.environ.get("KUBECONFIG")
    previous_default = kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    os.environ["KUBECONFIG"] = str(started.kubeconfig_path)
    kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(started.kubeconfig_path)
    try:
        yield started
    finally:
        started.stop()
        del request.config.stash[_CLUSTER]
        kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION = previous_default
        if previous_env is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous_env


@pytest.fixture(scope="session")
def api_client(cluster: Cluster) -> kubernetes.client.ApiClient:
    """A kubernetes `ApiClient` authenticated as cluster admin (system:masters); closed with the cluster."""
    return cluster.api_client()


@pytest.fixture
def namespace(api_client: kubernetes.client.ApiClient) -> Iterator[str]:
    """A fresh namespace `t-<random>` for one test, deleted afterwards."""
    name = create_namespace(api_client)
    try:
        yield name
    finally:
        delete_namespace(api_client, name)


# --- tools -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """Helm 3.18 with private cache/config/data homes; pass `kubeconfig=` for cluster commands."""
    return Helm(binary=_require("helm"), home=tmp_path_factory.mktemp("helm-home"))


# --- Prometheus ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus_factory(
    session_supervisor: Supervisor, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusFactory]:
    """Starts real Prometheus servers: `prometheus_factory(["127.0.0.1:PORT"])` returns a `Prometheus`."""
    factory = PrometheusFactory(_require("prometheus"), session_supervisor, tmp_path_factory.mktemp("prometheus"))
    yield factory
    factory.stop_all()


# --- a real inference engine -----------------------------------------------------------------


@pytest.fixture(scope="session")
def vllm_engine(session_supervisor: Supervisor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """vLLM's OpenAI server on loopback (tests/harness/engine.py), one per session: it takes 22–66 s to start."""
    server = start_vllm(session_supervisor, _require("vllm-python"), tmp_path_factory.mktemp("vllm"))
    yield server
    server.process.stop(grace_s=30.0)


@pytest.fixture(scope="session")
def engine_figures(request: pytest.FixtureRequest) -> list[str]:
    """Lines of measured figures, printed after the run whether the tests passed or not."""
    return request.config.stash.setdefault(_ENGINE_FIGURES, [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    lines = config.stash.get(_ENGINE_FIGURES, [])
    if lines:
        terminalreporter.section("real-engine figures")
        for line in lines:
            terminalreporter.write_line(line)
