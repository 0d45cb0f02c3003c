"""GPU capacity of a pool's node group: allocatable, requested, free, and asked for by Pending pods.

Called by `reconcile` for pools with a `nodeGroup`, so that a scale-up never asks for more GPUs than
the group has (unless `allowPending` trusts a cluster autoscaler to add nodes). A call reads the
nodes matching `matchLabels` and the cluster's non-terminal pods (two paginated lists, on worker
threads, as plain JSON), and reuses both for a few seconds (`SNAPSHOT_MAX_AGE_S`), so that many
pools cost a few lists, not one each.

- `allocatable_gpus`: the nodes' `status.allocatable[gpuResource]`, summed.
- `used_gpus`: GPUs requested by the non-terminal pods bound to those nodes (`spec.nodeName`),
  terminating pods included (they hold their GPUs until they are gone).
- `free_gpus`: per node that takes new pods, allocatable minus used (never below 0), summed;
  cordoned nodes (`spec.unschedulable`) add nothing, since no new pod lands there.
- `pending_gpus`: GPUs requested by Pending pods not bound to a node yet that could land in the
  group. Best effort: only `nodeSelector` is evaluated (a pod counts when its selector names all of
  the group's labels, or when some node of the group carries every label it asks for); node
  affinity, taints and tolerations are not.
- `own_gpus`: of the pods counted in `used_gpus` or `pending_gpus`, the GPUs of those in the pool's
  namespace matching its target's selector (the `/scale` status.selector), so the caller can add the
  replicas whose pods the snapshot does not show yet (issue 13's soak: a target scaled or created
  just before the pod list was read); None when no selector is given or it is not equality-based.

A pod's GPUs follow Kubernetes' rule for its effective request (the scheduler's and the kubelet's):
max(sum of app containers + sidecars, the largest init container + the sidecars started before it)
+ `spec.overhead`, where each container asks for its request of the resource, or its limit when no
request is given (an extended resource's request defaults to its limit). Sidecars are init
containers with `restartPolicy: Always` (Kubernetes 1.28+).
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import kubernetes
import urllib3
from kubernetes.utils.quantity import parse_quantity

from tokenscale.api import NodeGroup
from tokenscale.kube.scale import KubeError, SharedReads, list_items, translate
from tokenscale.planner.reasons import Reason

NON_TERMINAL_PODS = "status.phase!=Succeeded,status.phase!=Failed"  # field selector
SNAPSHOT_MAX_AGE_S = 5.0  # node and pod lists are reused this long; small against a pool's interval (30 s)

# Label syntax (k8s.io/apimachinery validation): a value is a name; a key is [DNS-subdomain "/"] name.
_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class InvalidNodeGroup(KubeError):
    """`nodeGroup.matchLabels` holds a key or value that is not a valid label."""

    reason = Reason.INVALID_NODE_GROUP


@dataclass(frozen=True)
class GpuCapacity:
    """GPUs of one node group (counts of the group's `gpuResource`)."""

    nodes: int  # nodes matching the labels, cordoned ones included
    cordoned_nodes: int  # of those, nodes with spec.unschedulable
    allocatable_gpus: int
    used_gpus: int
    free_gpus: int
    pending_gpus: int
    own_gpus: int | None = None


def equality_selector(text: str) -> dict[str, str] | None:
    """The labels an equality-based selector (`a=b,c==d`, what `/scale` reports for a matchLabels
    selector) requires; None when it is empty or has other terms (`!=`, `in`, `notin`, `!key`, `key`)."""
    if not text:
        return None
    labels: dict[str, str] = {}
    for term in text.split(","):
        key, sep, value = term.partition("=")
        value = value.removeprefix("=")
        if not sep or not key or key.endswith("!") or any(c in key + value for c in " ()!="):
            return None
        labels[key] = value
    return labels


def label_selector(labels: Mapping[str, str]) -> str:
    """The equality-based selector `k1=v1,k2=v2` (sorted); `InvalidNodeGroup` for a malformed label.

    Checked here because a comma or `=` in a value would silently change what the selector selects.
    """
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        key_ok = bool(_NAME.match(name)) and (not prefix or (len(prefix) <= 253 and bool(_SUBDOMAIN.match(prefix))))
        if not key_ok:
            raise InvalidNodeGroup(
                f"nodeGroup.matchLabels key {key!r} is not a label key ([prefix/]name, e.g. nvidia.com/gpu.product)"
            )
        if value and not _NAME.match(value):
            raise InvalidNodeGroup(
                f"nodeGroup.matchLabels value {value!r} of {key} is not a label value (at most 63 letters, digits, "
                "'-', '_' or '.', starting and ending with a letter or digit)"
            )
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


_parse_quantity: Callable[[object], Decimal] = parse_quantity  # the client's parser carries no annotations


def _whole(quantity: object) -> int:
    """A resource quantity as a whole count ("8", 8, "1k"); extended resources are integers."""
    return int(_parse_quantity(quantity))


def _container_gpus(container: Mapping[str, Any], resource: str) -> int:
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    if resource in requests:
        return _whole(requests[resource])
    if resource in limits:
        return _whole(limits[resource])
    return 0


def pod_gpus(spec: Mapping[str, Any], resource: str) -> int:
    """The pod's effective request of `resource` (see the module docstring), from its JSON spec."""
    app = sum(_container_gpus(c, resource) for c in spec.get("containers") or [])
    sidecars = 0
    init_peak = 0
    for container in spec.get("initContainers") or []:
        gpus = _container_gpus(container, resource)
        if container.get("restartPolicy") == "Always":
            sidecars += gpus  # runs beside everything started after it
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, sidecars + gpus)
    overhead = spec.get("overhead") or {}
    return max(app + sidecars, init_peak) + (_whole(overhead[resource]) if resource in overhead else 0)


def _could_land_in_group(
    node_selector: Mapping[str, str], match_labels: Mapping[str, str], node_labels: Sequence[Mapping[str, str]]
) -> bool:
    if all(node_selector.get(k) == v for k, v in match_labels.items()):
        return True  # it asks for every label of the group: only the group's nodes can take it
    return any(all(labels.get(k) == v for k, v in node_selector.items()) for labels in node_labels)


def _count(
    nodes: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    group: NodeGroup,
    own: tuple[str, Mapping[str, str]] | None = None,
) -> GpuCapacity:
    """The group's capacity from the JSON of its nodes and of the cluster's non-terminal pods; `own`
    (namespace, labels) selects the pods whose GPUs `own_gpus` sums."""
    resource = group.gpu_resource
    allocatable: dict[str, int] = {}
    cordoned: set[str] = set()
    labels: list[Mapping[str, str]] = []
    for node in nodes:
        name = str(node["metadata"]["name"])
        allocatable[name] = _whole(((node.get("status") or {}).get("allocatable") or {}).get(resource, 0))
        labels.append(node["metadata"].get("labels") or {})
        if (node.get("spec") or {}).get("unschedulable"):
            cordoned.add(name)
    used: dict[str, int] = dict.fromkeys(allocatable, 0)
    pending = 0
    own_gpus = 0
    for pod in pods:
        spec = pod.get("spec") or {}
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue  # the field selector already drops these; a pod finishing meanwhile is skipped here
        gpus = pod_gpus(spec, resource)
        if gpus == 0:
            continue
        node_name = spec.get("nodeName")
        metadata = pod.get("metadata") or {}
        if node_name:
            if node_name not in used:
                continue
            used[node_name] += gpus
        elif (
            (pod.get("status") or {}).get("phase") == "Pending"
            and not metadata.get("deletionTimestamp")
            and _could_land_in_group(spec.get("nodeSelector") or {}, group.match_labels, labels)
        ):
            pending += gpus
        else:
            continue
        if own is not None and metadata.get("namespace") == own[0]:
            pod_labels = metadata.get("labels") or {}
            if all(pod_labels.get(k) == v for k, v in own[1].items()):
                own_gpus += gpus
    return GpuCapacity(
        nodes=len(allocatable),
        cordoned_nodes=len(cordoned),
        allocatable_gpus=sum(allocatable.values()),
        used_gpus=sum(used.values()),
        free_gpus=sum(max(0, allocatable[n] - used[n]) for n in allocatable if n not in cordoned),
        pending_gpus=pending,
        own_gpus=own_gpus if own is not None else None,
    )


_nodes: SharedReads[str, list[dict[str, Any]]] = SharedReads()  # by label selector
_pods: SharedReads[str, list[dict[str, Any]]] = SharedReads()  # by namespaces ("" the cluster): non-terminal pods


def _list(
    what: str, call: Callable[..., Any], label_selector: str = "", field_selector: str = ""
) -> list[dict[str, Any]]:
    """Blocking: every item of a list call; `what` completes "could not …" in errors."""
    try:
        return list(list_items(call, label_selector=label_selector, field_selector=field_selector))
    except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError) as err:
        raise translate(err, what) from None


def _list_pods(core: kubernetes.client.CoreV1Api, namespaces: Sequence[str]) -> list[dict[str, Any]]:
    """Blocking: the non-terminal pods of the cluster, or of `namespaces` when given."""
    if not namespaces:
        return _list("list pods in all namespaces", core.list_pod_for_all_namespaces, field_selector=NON_TERMINAL_PODS)
    pods: list[dict[str, Any]] = []
    for namespace in namespaces:
        call = functools.partial(core.list_namespaced_pod, namespace)
        pods += _list(f"list pods in namespace {namespace}", call, field_selector=NON_TERMINAL_PODS)
    return pods


async def node_group_capacity(
    api: kubernetes.client.ApiClient,
    group: NodeGroup,
    *,
    namespaces: Sequence[str] = (),
    max_age_s: float = SNAPSHOT_MAX_AGE_S,
    own_namespace: str = "",
    own_selector: str = "",
) -> GpuCapacity:
    """Allocatable, used, free and pending GPUs of the nodes matching `group.match_labels`.

    The node list (per selector) and the pod list (one for all groups) are reused for `max_age_s`
    seconds and shared by concurrent callers: many pools, one read per few seconds. The pods are
    the cluster's, or only those of `namespaces` (the operator's watched namespaces, where its RBAC
    may list pods: GPUs other namespaces' pods use are then not seen, and read as free).
    Raises `InvalidNodeGroup` for a malformed label, `Forbidden` when the operator may not list
    nodes or pods, `ApiError` otherwise. `own_namespace` and `own_selector` (a target's namespace
    and `/scale` selector) pick the pods whose GPUs `own_gpus` sums.
    """
    selector = label_selector(group.match_labels)
    core = kubernetes.client.CoreV1Api(api)
    pods_key = ",".join(sorted(namespaces))
    listed = await asyncio.gather(
        _nodes.get(
            api,
            selector,
            lambda: _list(f"list nodes matching {selector!r}" if selector else "list nodes", core.list_node,
                          label_selector=selector),
            max_age_s,
        ),
        _pods.get(api, pods_key, lambda: _list_pods(core, namespaces), max_age_s),
        return_exceptions=True,
    )  # fmt: skip
    # Both lists run at once; when both fail, the nodes' error is the one reported, every time.
    for outcome in listed:
        if isinstance(outcome, BaseException):
            raise outcome
    nodes, pods = cast(tuple[list[dict[str, Any]], list[dict[str, Any]]], listed)
    own_labels = equality_selector(own_selector)
    own = (own_namespace, own_labels) if own_labels is not None else None
    return await asyncio.to_thread(_count, nodes, pods, group, own)
