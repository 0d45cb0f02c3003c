"""`tokenscale.kube.scale` against the real kube-apiserver 1.20 and controller manager.

Deployments, StatefulSets, ReplicationControllers and a custom resource whose CRD declares
`subresources.scale` are read and scaled through the same generic `/scale` calls; for the built-in
kinds the controller manager then reports status.replicas, for the custom resource (no
controller) the test writes its status. Errors keep their reason and their sentence: a ConfigMap
has no /scale, an unknown kind, a cluster-scoped kind, a deleted target, a forbidden identity
(admin impersonating a user with no grants). A real 409 is provoked by another client changing the
Deployment between `write_scale`'s read and its replace (through the documented `on_read` seam):
the caller's value still lands, in two rounds. There is no kubelet, so the test marks pods Ready by
patching their status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import kubernetes
import pytest
from harness.cluster import Cluster, close_api_client
from harness.resources import apply_crd, wait_for_pod_admission
from harness.wait import wait_until
from kubernetes.client.exceptions import ApiException

from tokenscale.api import ScaleTargetRef
from tokenscale.kube import scale
from tokenscale.kube.scale import ScaleState

pytestmark = pytest.mark.e2e

T = TypeVar("T")
GROUP = "kubetest.tokenscale.dev"
WAIT_S = 60.0
IMAGE = "registry.invalid/engine:test"  # never pulled: there is no kubelet


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def widget_crd(kind: str, plural: str, scope: str, group: str = GROUP) -> dict[str, Any]:
    """A tiny CRD whose objects expose /scale (spec.replicas, status.replicas, status.selector)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"replicas": {"type": "integer", "minimum": 0}},
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {
                                        "replicas": {"type": "integer"},
                                        "selector": {"type": "string"},
                                        "readyReplicas": {"type": "integer"},
                                    },
                                },
                            },
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                }
            ],
        },
    }


def delete_crd(api_client: kubernetes.client.ApiClient, name: str) -> None:
    """Delete a CRD and wait until it is gone (cluster-scoped: nothing else cleans it up)."""
    extensions = kubernetes.client.ApiextensionsV1Api(api_client)
    try:
        extensions.delete_custom_resource_definition(name)
    except ApiException as err:
        if err.status != 404:
            raise

    def gone() -> bool:
        try:
            extensions.read_custom_resource_definition(name)
        except ApiException as err:
            if err.status == 404:
                return True
            raise
        return False

    wait_until(gone, what=f"CRD {name} to be deleted", timeout_s=WAIT_S, interval_s=0.2)


@pytest.fixture(scope="module")
def widget_crds(api_client: kubernetes.client.ApiClient) -> Iterator[None]:
    """ScaleWidget (namespaced) and ClusterWidget (cluster-scoped), both with /scale; deleted afterwards."""
    manifests = [
        widget_crd("ScaleWidget", "scalewidgets", "Namespaced"),
        widget_crd("ClusterWidget", "clusterwidgets", "Cluster"),
    ]
    try:
        for manifest in manifests:
            apply_crd(api_client, manifest)
        yield
    finally:
        for manifest in manifests:
            delete_crd(api_client, manifest["metadata"]["name"])


# --- workloads ---------------------------------------------------------------------------------


def _template(name: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "engine", "image": IMAGE}]}}


def create_deployment(api_client: kubernetes.client.ApiClient, namespace: str, name: str, replicas: int) -> None:
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": _template(name)},
    }
    kubernetes.client.AppsV1Api(api_client).create_namespaced_deployment(namespace, body)


def create_statefulset(api_client: kubernetes.client.ApiClient, namespace: str, name: str, replicas: int) -> None:
    body = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "podManagementPolicy": "Parallel",  # OrderedReady would wait for each pod to be Ready
            "selector": {"matchLabels": {"app": name}},
            "template": _template(name),
        },
    }
    kubernetes.client.AppsV1Api(api_client).create_namespaced_stateful_set(namespace, body)


def create_replication_controller(
    api_client: kubernetes.client.ApiClient, namespace: str, name: str, replicas: int
) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"app": name}, "template": _template(name)},
    }
    kubernetes.client.CoreV1Api(api_client).create_namespaced_replication_controller(namespace, body)


def create_widget(api_client: kubernetes.client.ApiClient, namespace: str, name: str, replicas: int) -> None:
    body = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ScaleWidget",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    }
    kubernetes.client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, "v1", namespace, "scalewidgets", body
    )


def set_widget_status(api_client: kubernetes.client.ApiClient, namespace: str, name: str, **status: Any) -> None:
    """Write a ScaleWidget's status, as its (absent) controller would."""
    kubernetes.client.CustomObjectsApi(api_client).patch_namespaced_custom_object_status(
        GROUP, "v1", namespace, "scalewidgets", name, {"status": status}
    )


def deployment_replicas(api_client: kubernetes.client.ApiClient, namespace: str, name: str) -> int:
    return int(kubernetes.client.AppsV1Api(api_client).read_namespaced_deployment(name, namespace).spec.replicas)


def statefulset_replicas(api_client: kubernetes.client.ApiClient, namespace: str, name: str) -> int:
    return int(kubernetes.client.AppsV1Api(api_client).read_namespaced_stateful_set(name, namespace).spec.replicas)


def replication_controller_replicas(api_client: kubernetes.client.ApiClient, namespace: str, name: str) -> int:
    core = kubernetes.client.CoreV1Api(api_client)
    return int(core.read_namespaced_replication_controller(name, namespace).spec.replicas)


def widget_replicas(api_client: kubernetes.client.ApiClient, namespace: str, name: str) -> int:
    objects = kubernetes.client.CustomObjectsApi(api_client)
    widget: Any = objects.get_namespaced_custom_object(GROUP, "v1", namespace, "scalewidgets", name)
    return int(widget["spec"]["replicas"])


@dataclass(frozen=True)
class Workload:
    api_version: str
    kind: str
    create: Callable[[kubernetes.client.ApiClient, str, str, int], None]
    replicas: Callable[[kubernetes.client.ApiClient, str, str], int]  # spec.replicas of the object, not of /scale
    controlled: bool  # the controller manager reports status.replicas


WORKLOADS = [
    pytest.param(
        Workload("apps/v1", "Deployment", create_deployment, deployment_replicas, True),
        id="deployment",
    ),
    pytest.param(
        Workload("apps/v1", "StatefulSet", create_statefulset, statefulset_replicas, True),
        id="statefulset",
    ),
    pytest.param(
        Workload(
            "v1",
            "ReplicationController",
            create_replication_controller,
            replication_controller_replicas,
            True,
        ),
        id="replicationcontroller-core-group",
    ),
    pytest.param(
        Workload(f"{GROUP}/v1", "ScaleWidget", create_widget, widget_replicas, False),
        id="custom-resource-with-scale-subresource",
    ),
]


def ref(kind: str, name: str, api_version: str = "apps/v1") -> ScaleTargetRef:
    return ScaleTargetRef(api_version=api_version, kind=kind, name=name)


def pods_of(api_client: kubernetes.client.ApiClient, namespace: str, app: str) -> list[Any]:
    return list(
        kubernetes.client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector=f"app={app}").items
    )


def mark_ready(api_client: kubernetes.client.ApiClient, namespace: str, pod: str) -> None:
    """What a kubelet would report for a started pod whose readiness probe passes."""
    body = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    kubernetes.client.CoreV1Api(api_client).patch_namespaced_pod_status(pod, namespace, body)


# --- discovery ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("widget_crds")
@pytest.mark.parametrize(
    ("api_version", "kind", "expected"),
    [
        pytest.param("apps/v1", "Deployment", ("apps", "v1", "deployments", True, True), id="deployment"),
        pytest.param("apps/v1", "StatefulSet", ("apps", "v1", "statefulsets", True, True), id="statefulset"),
        pytest.param(
            "v1", "ReplicationController", ("", "v1", "replicationcontrollers", True, True), id="core-group-with-scale"
        ),
        pytest.param("v1", "ConfigMap", ("", "v1", "configmaps", True, False), id="core-group-without-scale"),
        pytest.param(f"{GROUP}/v1", "ScaleWidget", (GROUP, "v1", "scalewidgets", True, True), id="custom-resource"),
        pytest.param(
            f"{GROUP}/v1", "ClusterWidget", (GROUP, "v1", "clusterwidgets", False, True), id="cluster-scoped-cr"
        ),
    ],
)
def test_resolve_target_describes_the_kind_from_discovery(
    api_client: kubernetes.client.ApiClient, api_version: str, kind: str, expected: tuple[str, str, str, bool, bool]
) -> None:
    target = run(scale.resolve_target(api_client, api_version, kind, require_scale=False, max_age_s=0))
    assert (target.group, target.version, target.plural, target.namespaced, target.has_scale) == expected
    assert (target.api_version, target.kind) == (api_version, kind)


@pytest.mark.usefixtures("widget_crds")
@pytest.mark.parametrize(
    ("api_version", "kind", "error", "message"),
    [
        pytest.param(
            "v1",
            "ConfigMap",
            scale.NoScaleSubresource,
            "ConfigMap (v1) has no /scale subresource: tokenscale can only scale workloads that expose it "
            "(Deployment, StatefulSet, LeaderWorkerSet, a custom resource whose CRD declares subresources.scale)",
            id="configmap-has-no-scale",
        ),
        pytest.param(
            "apps/v1",
            "Gizmo",
            scale.TargetKindUnknown,
            "no kind Gizmo in apiVersion apps/v1: is its CRD installed?",
            id="unknown-kind-in-served-group",
        ),
        pytest.param(
            "example.invalid/v1",
            "Gizmo",
            scale.TargetKindUnknown,
            "no kind Gizmo in apiVersion example.invalid/v1: is its CRD installed?",
            id="group-version-not-served",
        ),
        pytest.param(
            "apps/v1",
            "deployment",
            scale.TargetKindUnknown,
            "no kind deployment in apiVersion apps/v1 (did you mean Deployment?): is its CRD installed?",
            id="kind-in-wrong-case-gets-a-hint",
        ),
        pytest.param(
            "apps/v1/beta",
            "Deployment",
            scale.TargetKindUnknown,
            "apiVersion 'apps/v1/beta' of kind Deployment is not <group>/<version> or <version> (e.g. apps/v1, v1)",
            id="malformed-api-version",
        ),
        pytest.param(
            f"{GROUP}/v1",
            "ClusterWidget",
            scale.TargetNotNamespaced,
            f"ClusterWidget ({GROUP}/v1) is cluster-scoped: scaleTargetRef must name a workload in the pool's "
            "namespace",
            id="cluster-scoped-kind",
        ),
    ],
)
def test_targets_that_cannot_be_scaled_raise_an_actionable_error(
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    api_version: str,
    kind: str,
    error: type[scale.KubeError],
    message: str,
) -> None:
    for operation in ("read", "write"):
        target = ref(kind, "anything", api_version)
        call = (
            scale.read_scale(api_client, namespace, target)
            if operation == "read"
            else scale.write_scale(api_client, namespace, target, 2)
        )
        with pytest.raises(error) as raised:
            run(call)
        assert (raised.value.reason, str(raised.value)) == (error.reason, message), operation
        assert isinstance(raised.value, scale.KubeError)


def test_discovery_finds_a_crd_installed_later_and_caches_what_it_found(
    api_client: kubernetes.client.ApiClient, cluster: Cluster
) -> None:
    group = f"late.{GROUP}"
    manifest = widget_crd("LateWidget", "latewidgets", "Namespaced", group)
    with pytest.raises(scale.TargetKindUnknown):
        run(scale.resolve_target(api_client, f"{group}/v1", "LateWidget"))
    try:
        apply_crd(api_client, manifest)
        # Not found a moment ago, found now: a failed lookup is never cached.
        found = run(scale.resolve_target(api_client, f"{group}/v1", "LateWidget"))
        assert (found.plural, found.has_scale) == ("latewidgets", True)
    finally:
        delete_crd(api_client, manifest["metadata"]["name"])
    # The kind is gone; within the cache's lifetime the resolution is still the cached one ...
    assert run(scale.resolve_target(api_client, f"{group}/v1", "LateWidget")) is found

    # ... and a caller asking for a fresh answer hears that it is gone.
    def unknown() -> bool:
        try:
            run(scale.resolve_target(api_client, f"{group}/v1", "LateWidget", max_age_s=0))
        except scale.TargetKindUnknown:
            return True
        return False

    wait_until(unknown, what="LateWidget to leave discovery", timeout_s=WAIT_S, interval_s=0.2)

    # Concurrent callers on a new client share one discovery request, hence one result object.
    fresh = cluster.api_client()
    try:

        async def many() -> list[scale.TargetResource]:
            return await asyncio.gather(*(scale.resolve_target(fresh, "apps/v1", "Deployment") for _ in range(20)))

        results = run(many())
    finally:
        close_api_client(fresh)
    assert len({id(r) for r in results}) == 1
    assert results[0].plural == "deployments"


# --- reads and writes --------------------------------------------------------------------------


@pytest.mark.usefixtures("widget_crds")
@pytest.mark.parametrize("workload", WORKLOADS)
def test_scale_any_kind_through_its_scale_subresource(
    api_client: kubernetes.client.ApiClient, namespace: str, workload: Workload
) -> None:
    name = "engine"
    target = ref(workload.kind, name, workload.api_version)
    workload.create(api_client, namespace, name, 1)
    before = run(scale.read_scale(api_client, namespace, target))
    assert (before.replicas, before.attempts) == (1, 1)

    written = run(scale.write_scale(api_client, namespace, target, 3))
    assert written.replicas == 3
    if not workload.controlled:
        # Nobody else writes a ScaleWidget; a controller's status writes may make a built-in's write retry.
        assert written.attempts == 1
    assert written.resource_version != before.resource_version
    # The object itself says 3, read independently of /scale.
    assert workload.replicas(api_client, namespace, name) == 3

    if not workload.controlled:
        set_widget_status(api_client, namespace, name, replicas=3, selector=f"app={name}")

    def reported() -> ScaleState | None:
        state = run(scale.read_scale(api_client, namespace, target))
        return state if state.status_replicas == 3 else None

    after = wait_until(reported, what=f"{workload.kind} status.replicas to reach 3", timeout_s=WAIT_S, interval_s=0.2)
    assert (after.replicas, after.selector, after.ready_counted) == (3, f"app={name}", True)
    assert after.ready_replicas == 0  # no kubelet: nothing is Ready until a test says so


def test_write_is_a_no_op_when_the_target_already_has_the_replicas(
    api_client: kubernetes.client.ApiClient, namespace: str
) -> None:
    create_deployment(api_client, namespace, "engine", 2)
    apps = kubernetes.client.AppsV1Api(api_client)
    same = run(scale.write_scale(api_client, namespace, ref("Deployment", "engine"), 2))
    assert (same.replicas, same.attempts) == (2, 1)
    # A write to the spec (through /scale too) would have bumped the generation; the controller's
    # status writes change the resourceVersion, so that is no proof either way.
    assert apps.read_namespaced_deployment("engine", namespace).metadata.generation == 1


def test_ready_replicas_of_a_deployment_are_its_ready_pods_that_are_not_terminating(
    api_client: kubernetes.client.ApiClient, namespace: str
) -> None:
    """The Deployment's status.readyReplicas, kept by the ReplicaSet and Deployment controllers."""
    core = kubernetes.client.CoreV1Api(api_client)
    create_deployment(api_client, namespace, "engine", 3)
    pods = wait_until(
        lambda: found if len(found := pods_of(api_client, namespace, "engine")) == 3 else None,
        what="the Deployment's 3 pods",
        timeout_s=WAIT_S,
        interval_s=0.2,
    )
    assert run(scale.read_scale(api_client, namespace, ref("Deployment", "engine"))).ready_counted  # 0 ready is known
    for pod in pods:
        mark_ready(api_client, namespace, pod.metadata.name)
    # A Ready pod of another app in the same namespace does not count.
    wait_for_pod_admission(api_client, namespace)
    other = {"metadata": {"name": "other", "labels": {"app": "other"}}, "spec": _template("other")["spec"]}
    core.create_namespaced_pod(namespace, other)
    mark_ready(api_client, namespace, "other")

    def ready_is(count: int) -> Callable[[], ScaleState | None]:
        def check() -> ScaleState | None:
            state = run(scale.read_scale(api_client, namespace, ref("Deployment", "engine")))
            return state if state.ready_replicas == count else None

        return check

    state = wait_until(ready_is(3), what="3 ready replicas", timeout_s=WAIT_S, interval_s=0.2)
    assert (state.ready_counted, state.selector) == (True, "app=engine")

    # A Ready pod being deleted (held by a finalizer, as a graceful stop would hold it) no longer counts.
    leaving = pods[0].metadata.name
    core.patch_namespaced_pod(leaving, namespace, {"metadata": {"finalizers": [f"{GROUP}/hold"]}})
    try:
        core.delete_namespaced_pod(leaving, namespace)
        state = wait_until(ready_is(2), what="2 ready replicas", timeout_s=WAIT_S, interval_s=0.2)
        assert core.read_namespaced_pod(leaving, namespace).metadata.deletion_timestamp is not None
        assert (state.ready_replicas, state.ready_counted, state.selector) == (2, True, "app=engine")
    finally:
        core.patch_namespaced_pod(leaving, namespace, {"metadata": {"finalizers": None}})


@pytest.mark.usefixtures("widget_crds")
def test_a_custom_workload_that_keeps_ready_replicas_is_taken_at_its_word(
    api_client: kubernetes.client.ApiClient, namespace: str
) -> None:
    """status.readyReplicas when the workload keeps one; its selector's pods only when it does not."""
    widget = ref("ScaleWidget", "engine", f"{GROUP}/v1")
    create_widget(api_client, namespace, "engine", 4)
    wait_for_pod_admission(api_client, namespace)
    pod = {"metadata": {"name": "engine-0", "labels": {"app": "engine"}}, "spec": _template("engine")["spec"]}
    kubernetes.client.CoreV1Api(api_client).create_namespaced_pod(namespace, pod)
    mark_ready(api_client, namespace, "engine-0")

    set_widget_status(api_client, namespace, "engine", replicas=4, selector="app=engine")
    counted = wait_until(
        lambda: s if (s := run(scale.read_scale(api_client, namespace, widget))).status_replicas == 4 else None,
        what="the widget's status in the cache",
        timeout_s=WAIT_S,
        interval_s=0.1,
    )
    assert (counted.ready_counted, counted.ready_replicas) == (True, 1)  # no readyReplicas: its pods counted

    set_widget_status(api_client, namespace, "engine", readyReplicas=3)
    reported = wait_until(
        lambda: s if (s := run(scale.read_scale(api_client, namespace, widget))).ready_replicas != 1 else None,
        what="the widget's readyReplicas in the cache",
        timeout_s=WAIT_S,
        interval_s=0.1,
    )
    assert (reported.ready_counted, reported.ready_replicas, reported.replicas) == (True, 3, 4)


@pytest.mark.usefixtures("widget_crds")
def test_a_scale_without_a_selector_counts_no_pods(api_client: kubernetes.client.ApiClient, namespace: str) -> None:
    """An empty selector would select every pod of the namespace: ready is then unknown, not everything."""
    widget = ref("ScaleWidget", "engine", f"{GROUP}/v1")
    create_widget(api_client, namespace, "engine", 1)
    pod = {"metadata": {"name": "engine-0", "labels": {"app": "engine"}}, "spec": _template("engine")["spec"]}
    wait_for_pod_admission(api_client, namespace)
    kubernetes.client.CoreV1Api(api_client).create_namespaced_pod(namespace, pod)
    mark_ready(api_client, namespace, "engine-0")
    state = run(scale.read_scale(api_client, namespace, widget))
    assert (state.selector, state.ready_counted, state.ready_replicas) == ("", False, 0)

    set_widget_status(api_client, namespace, "engine", replicas=1, selector="app=engine")
    state = run(scale.read_scale(api_client, namespace, widget))
    assert (state.selector, state.ready_counted, state.ready_replicas, state.status_replicas) == (
        "app=engine",
        True,
        1,
        1,
    )


def test_a_deleted_target_is_target_not_found(api_client: kubernetes.client.ApiClient, namespace: str) -> None:
    create_deployment(api_client, namespace, "engine", 1)
    target = ref("Deployment", "engine")

    def cached_read() -> int | None:  # /scale reads come from the watch cache, which may lag a write
        try:
            return run(scale.read_scale(api_client, namespace, target)).replicas
        except scale.TargetNotFound:
            return None

    assert wait_until(cached_read, what="the Deployment in the watch cache", timeout_s=10, interval_s=0.1) == 1
    kubernetes.client.AppsV1Api(api_client).delete_namespaced_deployment("engine", namespace)
    wait_until(lambda: cached_read() is None, what="the deletion in the watch cache", timeout_s=10, interval_s=0.1)
    message = f"Deployment {namespace}/engine (apps/v1) was not found: create it, or fix scaleTargetRef"
    for call in (
        scale.read_scale(api_client, namespace, ref("Deployment", "engine")),
        scale.write_scale(api_client, namespace, ref("Deployment", "engine"), 2),
    ):
        with pytest.raises(scale.TargetNotFound) as raised:
            run(call)
        assert (raised.value.reason, str(raised.value)) == ("TargetNotFound", message)


def test_a_miss_in_the_watch_cache_is_asked_again_of_etcd(
    api_client: kubernetes.client.ApiClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The watch cache may not hold an object created a moment ago (a CI run read a ScaleWidget right
    # after creating it and got 404), so a cached 404 is not TargetNotFound until etcd says so too.
    reads: list[tuple[str, Any]] = []
    real = scale.request

    def spy(api: Any, method: str, path: str, **kw: Any) -> Any:
        reads.append((path, kw.get("query")))
        return real(api, method, path, **kw)

    monkeypatch.setattr(scale, "request", spy)
    with pytest.raises(scale.TargetNotFound):
        run(scale.read_scale(api_client, namespace, ref("Deployment", "absent")))
    scale_path = f"/apis/apps/v1/namespaces/{namespace}/deployments/absent/scale"
    assert reads == [(scale_path, [("resourceVersion", "0")]), (scale_path, [])]


def test_a_conflicting_writer_is_retried_with_a_fresh_read(
    api_client: kubernetes.client.ApiClient, cluster: Cluster, namespace: str
) -> None:
    create_deployment(api_client, namespace, "engine", 1)
    other = cluster.api_client()  # another writer, on its own connection
    other_apps = kubernetes.client.AppsV1Api(other)
    rounds: list[int] = []

    def meddle(round_: int) -> None:
        """Between write_scale's read and its replace, someone else scales the Deployment to 2."""
        rounds.append(round_)
        if round_ == 1:
            other_apps.patch_namespaced_deployment_scale("engine", namespace, {"spec": {"replicas": 2}})

    try:
        written = run(scale.write_scale(api_client, namespace, ref("Deployment", "engine"), 4, on_read=meddle))
    finally:
        close_api_client(other)
    # The controller manager's status writes (reacting to the other writer) may conflict once more.
    assert rounds == list(range(1, written.attempts + 1))
    assert (written.replicas, written.attempts > 1) == (4, True)
    assert deployment_replicas(api_client, namespace, "engine") == 4


def test_conflicts_on_every_attempt_end_in_an_api_error(
    api_client: kubernetes.client.ApiClient, cluster: Cluster, namespace: str
) -> None:
    create_deployment(api_client, namespace, "engine", 1)
    other = cluster.api_client()
    other_apps = kubernetes.client.AppsV1Api(other)
    rounds: list[int] = []

    def meddle(round_: int) -> None:
        rounds.append(round_)
        other_apps.patch_namespaced_deployment_scale("engine", namespace, {"spec": {"replicas": 10 + round_}})

    try:
        with pytest.raises(scale.ApiError) as raised:
            run(scale.write_scale(api_client, namespace, ref("Deployment", "engine"), 4, attempts=3, on_read=meddle))
    finally:
        close_api_client(other)
    assert (raised.value.reason, raised.value.status, rounds) == ("ApiError", 409, [1, 2, 3])
    assert str(raised.value) == (
        f"could not update deployments/scale of Deployment {namespace}/engine: it changed under every one of 3 "
        "attempts (409 Conflict); another controller may be scaling it too, such as a HorizontalPodAutoscaler"
    )
    # The other writer's last value stands; nothing of ours was written.
    assert deployment_replicas(api_client, namespace, "engine") == 13


def test_an_identity_without_grants_gets_forbidden(
    api_client: kubernetes.client.ApiClient, cluster: Cluster, namespace: str
) -> None:
    create_deployment(api_client, namespace, "engine", 1)
    nobody = cluster.api_client()
    # The admin token may impersonate; the impersonated user is only system:authenticated (discovery).
    nobody.set_default_header("Impersonate-User", "tokenscale-test-nobody")
    try:
        with pytest.raises(scale.Forbidden) as read_error:
            run(scale.read_scale(nobody, namespace, ref("Deployment", "engine")))
        with pytest.raises(scale.Forbidden) as write_error:
            run(scale.write_scale(nobody, namespace, ref("Deployment", "engine"), 2))
    finally:
        close_api_client(nobody)
    for raised in (read_error, write_error):
        message = str(raised.value)
        assert raised.value.reason == "Forbidden"
        assert message.startswith(f"the operator may not read deployments/scale of Deployment {namespace}/engine (")
        assert '"tokenscale-test-nobody" cannot get resource "deployments/scale"' in message
        assert message.endswith("grant it in its Role or ClusterRole (the Helm chart's rbac values)")
    assert deployment_replicas(api_client, namespace, "engine") == 1


def test_write_rejects_negative_replicas_before_calling_the_server(api_client: kubernetes.client.ApiClient) -> None:
    with pytest.raises(ValueError, match="replicas must be >= 0, not -1"):
        run(scale.write_scale(api_client, "default", ref("Deployment", "engine"), -1))
