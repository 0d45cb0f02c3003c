"""`tokenscale.kube.capacity`: GPUs of a node group, on the real kube-apiserver 1.20.

The test creates Node objects (there is no kubelet: a Node is just an object whose
status.allocatable the test writes) labelled with its namespace's name, so each test has its own
node group, and binds pods to them with spec.nodeName. Phases (Running, Succeeded, Failed) are
patched into pod status, as a kubelet would report them. Nodes, and the pods bound to them, are
deleted when the test ends. The pod rule (requests, limits, init containers, sidecars, overhead)
and the selector syntax also get table tests of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import kubernetes
import pytest
from harness.cluster import Cluster, close_api_client
from harness.resources import wait_for_pod_admission
from harness.wait import wait_until
from kubernetes.client.exceptions import ApiException

from tokenscale.api import NodeGroup
from tokenscale.kube import capacity, scale
from tokenscale.kube.capacity import GpuCapacity

pytestmark = pytest.mark.e2e

GPU = "nvidia.com/gpu"
PRODUCT = "kubetest.tokenscale.dev/gpu.product"
GROUP_KEY = "kubetest.tokenscale.dev/group"  # valued with the test's namespace: one group per test
IMAGE = "registry.invalid/engine:test"
WAIT_S = 60.0


def container(name: str, requests: Mapping[str, Any] | None = None, limits: Mapping[str, Any] | None = None,
              restart_policy: str | None = None) -> dict[str, Any]:  # fmt: skip
    resources: dict[str, Any] = {}
    if requests is not None:
        resources["requests"] = dict(requests)
    if limits is not None:
        resources["limits"] = dict(limits)
    out: dict[str, Any] = {"name": name, "image": IMAGE, "resources": resources}
    if restart_policy is not None:
        out["restartPolicy"] = restart_policy
    return out


# --- the pod rule and the selector (no cluster) -------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "gpus"),
    [
        pytest.param({"containers": [container("a")]}, 0, id="no-gpu"),
        pytest.param({"containers": [container("a", {GPU: "1"}), container("b", {GPU: "2"})]}, 3, id="requests-summed"),
        pytest.param({"containers": [container("a", limits={GPU: 2})]}, 2, id="limits-when-no-request"),
        pytest.param({"containers": [container("a", {GPU: "1"}, {GPU: "4"})]}, 1, id="request-wins-over-limit"),
        pytest.param({"containers": [container("a", {"amd.com/gpu": "4", "cpu": "8"})]}, 0, id="other-resources"),
        pytest.param(
            {"initContainers": [container("i", {GPU: "4"})], "containers": [container("a", {GPU: "1"})] * 2},
            4,
            id="init-larger-than-app-sum",
        ),
        pytest.param(
            {
                "initContainers": [container("i", {GPU: "1"}), container("j", {GPU: "2"})],
                "containers": [container("a", {GPU: "2"}), container("b", {GPU: "1"})],
            },
            3,
            id="largest-init-not-their-sum",
        ),
        pytest.param(
            {
                "initContainers": [container("s", {GPU: "1"}, restart_policy="Always"), container("i", {GPU: "3"})],
                "containers": [container("a", {GPU: "1"})],
            },
            4,
            id="sidecar-runs-beside-later-init",
        ),
        pytest.param(
            {
                "initContainers": [container("i", {GPU: "1"}), container("s", {GPU: "2"}, restart_policy="Always")],
                "containers": [container("a", {GPU: "1"})],
            },
            3,
            id="sidecar-runs-beside-app",
        ),
        pytest.param({"containers": [container("a", {GPU: "1"})], "overhead": {GPU: "1"}}, 2, id="pod-overhead"),
    ],
)
def test_pod_gpus_follow_the_kubernetes_rule(spec: dict[str, Any], gpus: int) -> None:
    assert capacity.pod_gpus(spec, GPU) == gpus


@pytest.mark.parametrize(
    ("labels", "selector"),
    [
        pytest.param({}, "", id="empty-selects-all"),
        pytest.param({"b": "2", "a": "1"}, "a=1,b=2", id="sorted"),
        pytest.param(
            {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3",
            id="prefixed-key",
        ),  # fmt: skip
        pytest.param({"pool": ""}, "pool=", id="empty-value"),
    ],
)
def test_label_selector_is_built_from_match_labels(labels: dict[str, str], selector: str) -> None:
    assert capacity.label_selector(labels) == selector


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        pytest.param(
            {"pool": "a,b"},
            "nodeGroup.matchLabels value 'a,b' of pool is not a label value (at most 63 letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit)",
            id="comma-in-value",
        ),
        pytest.param({"pool": "a=b"}, None, id="equals-in-value"),
        pytest.param({"pool": "x" * 64}, None, id="value-too-long"),
        pytest.param(
            {"pool in (a)": "x"},
            "nodeGroup.matchLabels key 'pool in (a)' is not a label key ([prefix/]name, e.g. nvidia.com/gpu.product)",
            id="expression-as-key",
        ),
        pytest.param({"Bad_Prefix/pool": "x"}, None, id="prefix-not-a-dns-subdomain"),
        pytest.param({"": "x"}, None, id="empty-key"),
    ],
)
def test_malformed_labels_are_invalid_node_group(labels: dict[str, str], message: str | None) -> None:
    with pytest.raises(capacity.InvalidNodeGroup) as raised:
        capacity.label_selector(labels)
    assert raised.value.reason == "InvalidNodeGroup"
    assert isinstance(raised.value, scale.KubeError)
    if message is not None:
        assert str(raised.value) == message


# --- on the cluster ------------------------------------------------------------------------------

NodeFactory = Callable[..., str]


@pytest.fixture
def make_node(api_client: kubernetes.client.ApiClient, namespace: str) -> Iterator[NodeFactory]:
    """Creates Nodes named `<namespace>-<suffix>` with the given allocatable resources; deletes them at the end."""
    core = kubernetes.client.CoreV1Api(api_client)
    created: list[str] = []

    def make(suffix: str, gpus: Mapping[str, str], labels: Mapping[str, str], *, cordoned: bool = False) -> str:
        name = f"{namespace}-{suffix}"
        core.create_node({"metadata": {"name": name, "labels": dict(labels)}, "spec": {"unschedulable": cordoned}})
        created.append(name)
        resources = {"cpu": "64", "memory": "512Gi", "pods": "110", **gpus}
        core.patch_node_status(name, {"status": {"capacity": resources, "allocatable": resources}})
        return name

    try:
        yield make
    finally:
        for name in created:
            core.delete_node(name)


PodFactory = Callable[..., None]


@pytest.fixture
def make_pod(api_client: kubernetes.client.ApiClient, namespace: str, make_node: NodeFactory) -> Iterator[PodFactory]:
    """Creates pods in the test's namespace; deletes them outright (and waits) before the nodes go.

    Without a kubelet a bound pod never finishes a graceful deletion, and a pod left to the
    namespace's (asynchronous) deletion could still be counted by the next test.
    """
    core = kubernetes.client.CoreV1Api(api_client)
    created: list[str] = []
    wait_for_pod_admission(api_client, namespace)

    def make(name: str, spec: Mapping[str, Any], *, phase: str | None = None, terminating: bool = False) -> None:
        core.create_namespaced_pod(namespace, {"metadata": {"name": name}, "spec": dict(spec)})
        created.append(name)
        if phase is not None:
            core.patch_namespaced_pod_status(name, namespace, {"status": {"phase": phase}})
        if terminating:
            # A bound pod waits for its (absent) kubelet to confirm the stop: it stays, with a deletionTimestamp.
            core.delete_namespaced_pod(name, namespace)
            assert core.read_namespaced_pod(name, namespace).metadata.deletion_timestamp is not None

    def gone(name: str) -> bool:
        try:
            core.read_namespaced_pod(name, namespace)
        except ApiException as err:
            if err.status == 404:
                return True
            raise
        return False

    try:
        yield make
    finally:
        for name in created:
            try:
                core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
            except ApiException as err:
                if err.status != 404:
                    raise
        for name in created:
            wait_until(lambda name=name: gone(name), what=f"pod {name} to be deleted", timeout_s=WAIT_S, interval_s=0.1)


def group_of(namespace: str, **extra: str) -> dict[str, str]:
    return {GROUP_KEY: namespace, PRODUCT: "H100", **extra}


def measure(api_client: kubernetes.client.ApiClient, group: NodeGroup, max_age_s: float = 0.0) -> GpuCapacity:
    """The group's capacity; by default from fresh lists (the test has just changed the cluster)."""
    return asyncio.run(capacity.node_group_capacity(api_client, group, max_age_s=max_age_s))


ON_GROUP = "a"  # a node of the group, 8 GPUs
OFF_GROUP = "z"  # a node outside it, 8 GPUs, same product


@pytest.mark.parametrize(
    ("spec", "phase", "terminating", "used", "pending"),
    [
        pytest.param({"nodeName": ON_GROUP,
                      "containers": [container("a", {GPU: "1"}, {GPU: "1"}), container("b", limits={GPU: "2"})]},
                     None, False, 3, 0, id="bound-pending-requests-and-limits"),
        pytest.param({"nodeName": ON_GROUP, "containers": [container("a", limits={GPU: "2"})]},
                     "Running", False, 2, 0, id="running-limits-only"),
        pytest.param({"nodeName": ON_GROUP, "initContainers": [container("i", limits={GPU: "4"})],
                      "containers": [container("a", limits={GPU: "1"})]},
                     "Running", False, 4, 0, id="init-container-larger"),
        pytest.param({"nodeName": ON_GROUP, "containers": [container("a", limits={GPU: "4"})]},
                     "Succeeded", False, 0, 0, id="succeeded-frees-its-gpus"),
        pytest.param({"nodeName": ON_GROUP, "containers": [container("a", limits={GPU: "4"})]},
                     "Failed", False, 0, 0, id="failed-frees-its-gpus"),
        pytest.param({"nodeName": ON_GROUP, "containers": [container("a", limits={GPU: "2"})]},
                     "Running", True, 2, 0, id="terminating-still-holds-its-gpus"),
        pytest.param({"nodeName": OFF_GROUP, "containers": [container("a", limits={GPU: "4"})]},
                     "Running", False, 0, 0, id="pod-on-a-node-outside-the-group"),
        pytest.param({"nodeName": ON_GROUP, "containers": [container("a", {"cpu": "1"})]},
                     "Running", False, 0, 0, id="pod-without-gpus"),
        pytest.param({"nodeSelector": "group", "containers": [container("a", limits={GPU: "2"})]},
                     None, False, 0, 2, id="unbound-asking-for-the-group"),
        pytest.param({"nodeSelector": {PRODUCT: "H100"}, "containers": [container("a", limits={GPU: "1"})]},
                     None, False, 0, 1, id="unbound-asking-for-labels-group-nodes-have"),
        pytest.param({"nodeSelector": {PRODUCT: "A100"}, "containers": [container("a", limits={GPU: "3"})]},
                     None, False, 0, 0, id="unbound-asking-for-other-nodes"),
        pytest.param({"nodeSelector": "group", "containers": [container("a", {"cpu": "1"})]},
                     None, False, 0, 0, id="unbound-without-gpus"),
    ],
)  # fmt: skip
def test_gpus_of_one_pod_in_the_group(
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    make_node: NodeFactory,
    make_pod: PodFactory,
    spec: dict[str, Any],
    phase: str | None,
    terminating: bool,
    used: int,
    pending: int,
) -> None:
    labels = group_of(namespace)
    nodes = {
        ON_GROUP: make_node("a", {GPU: "8"}, labels),
        OFF_GROUP: make_node("z", {GPU: "8"}, {PRODUCT: "H100", GROUP_KEY: "elsewhere"}),
    }
    group = NodeGroup(match_labels=labels)
    assert measure(api_client, group) == GpuCapacity(
        nodes=1, cordoned_nodes=0, allocatable_gpus=8, used_gpus=0, free_gpus=8, pending_gpus=0
    )
    pod = dict(spec)
    if "nodeName" in pod:
        pod["nodeName"] = nodes[pod["nodeName"]]
    if pod.get("nodeSelector") == "group":
        pod["nodeSelector"] = labels
    make_pod("engine", pod, phase=phase, terminating=terminating)
    assert measure(api_client, group) == GpuCapacity(
        nodes=1, cordoned_nodes=0, allocatable_gpus=8, used_gpus=used, free_gpus=8 - used, pending_gpus=pending
    )


def test_capacity_of_a_group_of_several_nodes(
    api_client: kubernetes.client.ApiClient, namespace: str, make_node: NodeFactory, make_pod: PodFactory
) -> None:
    labels = group_of(namespace)
    a = make_node("a", {GPU: "8", "amd.com/gpu": "2"}, labels)
    b = make_node("b", {GPU: "4"}, labels)
    cordoned = make_node("c", {GPU: "8"}, labels, cordoned=True)
    make_node("cpu", {}, labels)  # in the group, no GPUs
    make_node("other", {GPU: "8"}, {PRODUCT: "H100"})
    pods = {
        "a-1": {"nodeName": a, "containers": [container("x", limits={GPU: "3"})]},
        "a-amd": {"nodeName": a, "containers": [container("x", limits={"amd.com/gpu": "2"})]},
        # More than b has (the test binds it; a scheduler would not): b is full, not at -2.
        "b-over": {"nodeName": b, "containers": [container("x", limits={GPU: "6"})]},
        "c-1": {"nodeName": cordoned, "containers": [container("x", limits={GPU: "1"})]},
        "waiting": {"nodeSelector": labels, "containers": [container("x", limits={GPU: "2"})]},
    }
    for name, spec in pods.items():
        make_pod(name, spec)
    nvidia = measure(api_client, NodeGroup(match_labels=labels))
    # Free: a 8-3, b max(0, 4-6), the cordoned node none (no new pod lands there), the CPU node none.
    assert nvidia == GpuCapacity(
        nodes=4, cordoned_nodes=1, allocatable_gpus=20, used_gpus=10, free_gpus=5, pending_gpus=2
    )
    amd = measure(api_client, NodeGroup(match_labels=labels, gpu_resource="amd.com/gpu"))
    assert amd == GpuCapacity(nodes=4, cordoned_nodes=1, allocatable_gpus=2, used_gpus=2, free_gpus=0, pending_gpus=0)


def test_lists_are_reused_while_young(
    api_client: kubernetes.client.ApiClient, namespace: str, make_node: NodeFactory, make_pod: PodFactory
) -> None:
    labels = group_of(namespace)
    node = make_node("a", {GPU: "8"}, labels)
    group = NodeGroup(match_labels=labels)
    before = measure(api_client, group)  # fresh lists, kept
    make_pod("engine", {"nodeName": node, "containers": [container("x", limits={GPU: "2"})]})
    assert measure(api_client, group, max_age_s=3600) == before  # the kept lists: the new pod is not seen
    after = measure(api_client, group)
    assert (before.used_gpus, after.used_gpus, after.free_gpus) == (0, 2, 6)


def test_a_group_no_node_matches_has_no_gpus(api_client: kubernetes.client.ApiClient, namespace: str) -> None:
    group = NodeGroup(match_labels=group_of(namespace))
    assert measure(api_client, group) == GpuCapacity(0, 0, 0, 0, 0, 0)


def test_capacity_is_forbidden_without_the_cluster_role(
    api_client: kubernetes.client.ApiClient, cluster: Cluster, namespace: str
) -> None:
    nobody = cluster.api_client()
    nobody.set_default_header("Impersonate-User", "tokenscale-test-nobody")
    labels = group_of(namespace)
    try:
        with pytest.raises(scale.Forbidden) as raised:
            asyncio.run(capacity.node_group_capacity(nobody, NodeGroup(match_labels=labels)))
    finally:
        close_api_client(nobody)
    message = str(raised.value)
    assert raised.value.reason == "Forbidden"
    assert message.startswith(f"the operator may not list nodes matching '{capacity.label_selector(labels)}' (")
    assert message.endswith("grant it in its Role or ClusterRole (the Helm chart's rbac values)")


def test_namespaced_mode_counts_only_the_watched_namespaces_pods(
    api_client: kubernetes.client.ApiClient, namespace: str, make_node: NodeFactory, make_pod: PodFactory
) -> None:
    """With the watched namespaces given (the chart's namespaced mode grants pods only there), pods are
    listed per namespace: a watched namespace's pod counts, one of an unwatched namespace does not."""
    labels = group_of(namespace)
    node = make_node("a", {GPU: "8"}, labels)
    make_pod("engine", {"nodeName": node, "containers": [container("a", limits={GPU: "3"})]}, phase="Running")
    group = NodeGroup(match_labels=labels)

    def used(namespaces: tuple[str, ...]) -> int:
        found = asyncio.run(capacity.node_group_capacity(api_client, group, namespaces=namespaces, max_age_s=0.0))
        return found.used_gpus

    assert used(()) == 3  # cluster-wide
    assert used((namespace,)) == 3
    assert used(("default",)) == 0  # the pod's namespace is not watched: its GPUs are not seen
    assert used(("default", namespace)) == 3


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        pytest.param("app=llama-decode", {"app": "llama-decode"}, id="match-labels"),
        pytest.param("a=1,b==2", {"a": "1", "b": "2"}, id="double-equals"),
        pytest.param("tier=", {"tier": ""}, id="empty-value"),
        pytest.param("", None, id="empty-selects-all-so-none"),
        pytest.param("a!=1", None, id="not-equal"),
        pytest.param("a in (1,2)", None, id="set-based"),
        pytest.param("a=1,!b", None, id="does-not-exist"),
        pytest.param("a", None, id="exists"),
    ],
)
def test_equality_selector_reads_match_labels_and_refuses_the_rest(text: str, labels: dict[str, str] | None) -> None:
    assert capacity.equality_selector(text) == labels


def _pending(namespace: str, app: str, gpus: int, group: str = "g") -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "labels": {"app": app}},
        "spec": {"nodeSelector": {GROUP_KEY: group}, "containers": [container("e", {GPU: str(gpus)})]},
        "status": {"phase": "Pending"},
    }


@pytest.mark.parametrize(
    ("pods", "own", "pending", "own_gpus"),
    [
        pytest.param([_pending("ns", "a", 4), _pending("ns", "b", 4)], ("ns", {"app": "a"}), 8, 4, id="own-of-two"),
        pytest.param([_pending("other", "a", 4)], ("ns", {"app": "a"}), 4, 0, id="same-labels-other-namespace"),
        pytest.param([_pending("ns", "a", 4, group="h")], ("ns", {"app": "a"}), 0, 0, id="aimed-at-another-group"),
        pytest.param([_pending("ns", "a", 4)], None, 4, None, id="no-selector-no-count"),
    ],
)
def test_own_gpus_are_the_targets_pods_counted_in_the_group(
    pods: list[dict[str, Any]], own: tuple[str, dict[str, str]] | None, pending: int, own_gpus: int | None
) -> None:
    nodes = [{"metadata": {"name": "n", "labels": {GROUP_KEY: "g"}}, "status": {"allocatable": {GPU: "16"}}}]
    counted = capacity._count(nodes, pods, NodeGroup(match_labels={GROUP_KEY: "g"}), own)
    assert (counted.free_gpus, counted.pending_gpus, counted.own_gpus) == (16, pending, own_gpus)
