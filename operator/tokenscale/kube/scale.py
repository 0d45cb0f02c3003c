"""Workloads scaled through their `/scale` subresource: discovery, reads, and conflict-safe writes.

Called by `reconcile` once per pool and cycle. `resolve_target` finds a `scaleTargetRef`'s
resource by API discovery (`/api/v1` for the core group, `/apis/<group>/<version>` otherwise), so
any kind that exposes `/scale` works (Deployment, StatefulSet, LeaderWorkerSet, a custom resource
whose CRD declares `subresources.scale`), through generic calls rather than one typed API per kind.
`read_scale` reads `/scale` and the ready replicas; `write_scale` replaces `/scale` with the
resourceVersion it read and retries a 409 Conflict with a fresh read (STYLE.md §20).

The `kubernetes` client is synchronous: each operation runs on a worker thread (`asyncio.to_thread`)
and every request carries a timeout, so the event loop never waits on the API server. Answers are
read as plain JSON (`_preload_content=False`), which is quicker than the client's model classes.
Failures become `KubeError`s whose `reason` is a CamelCase constant and whose message says what to
do. The helpers other `kube/` modules share (error translation, paginated lists) live here too.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

import kubernetes
import urllib3

from tokenscale.api import ScaleTargetRef
from tokenscale.planner.reasons import Reason

DISCOVERY_TTL_S = 300.0  # a resolved kind is trusted this long; a CRD installed later is found at once
REQUEST_TIMEOUT_S = 30.0  # per API request: connect + read
PAGE_SIZE = 500  # items per list request (the apiserver's chunking)
WRITE_ATTEMPTS = 5  # read-modify-write rounds before a run of 409 Conflicts is reported
CONFLICT_BACKOFF_S = 0.01  # pause after the n-th conflict: n times this (client-go's RetryOnConflict waits 10 ms)


class KubeError(Exception):
    """A failed API operation: `reason` is a CamelCase constant, the message one actionable sentence."""

    reason: Reason = Reason.API_ERROR

    def __init__(self, message: str, reason: Reason | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class TargetNotFound(KubeError):
    """The scale target does not exist in the namespace."""

    reason = Reason.TARGET_NOT_FOUND


class NoScaleSubresource(KubeError):
    """The kind exists but has no `/scale` subresource."""

    reason = Reason.NO_SCALE_SUBRESOURCE


class TargetKindUnknown(KubeError):
    """Discovery does not know the kind in that apiVersion (CRD missing, typo, version not served)."""

    reason = Reason.TARGET_KIND_UNKNOWN


class TargetNotNamespaced(KubeError):
    """The kind is cluster-scoped; a pool only scales workloads in its own namespace."""

    reason = Reason.TARGET_NOT_NAMESPACED


class Forbidden(KubeError):
    """The operator's identity may not do what it asked (HTTP 403)."""

    reason = Reason.FORBIDDEN


class ApiError(KubeError):
    """Any other failure: an HTTP error (`status`), a run of conflicts, or no answer (`status` 0)."""

    reason = Reason.API_ERROR

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TargetResource:
    """A kind as discovery describes it: where its objects and their `/scale` live."""

    api_version: str  # as written in the scaleTargetRef: "apps/v1", "v1"
    kind: str
    group: str  # "" for the core group
    version: str
    plural: str  # resource name in URLs, e.g. "deployments"
    namespaced: bool
    has_scale: bool  # discovery lists "<plural>/scale"


@dataclass(frozen=True)
class ScaleState:
    """A target's `/scale` as read (or as written) and its ready replicas.

    `/scale` carries no ready count: `ready_replicas` is the workload's `status.readyReplicas` when
    it keeps one, else the pods in the namespace that match `selector` (the Scale's
    status.selector), are Ready and are not terminating. A workload with neither (a CRD with no
    `labelSelectorPath` and no readyReplicas) gives `ready_counted` False and `ready_replicas` 0:
    unknown, never "all pods of the namespace".
    """

    replicas: int  # spec.replicas: what the workload is asked to run
    status_replicas: int  # status.replicas: what its controller last reported
    selector: str  # status.selector, the label selector in string form ("" when the kind has none)
    ready_replicas: int
    ready_counted: bool
    resource_version: str
    attempts: int = 1  # read-modify-write rounds it took (1 for a read, 1 + conflicts for a write)


# --- errors and requests shared by the kube/ modules -------------------------------------------


def _server_message(err: kubernetes.client.ApiException) -> str:
    """The `message` of the Status the apiserver answered with, or the HTTP reason."""
    if err.body:
        try:
            status = json.loads(err.body)
        except ValueError:
            status = None
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
    return str(err.reason or "no details")


def translate(err: kubernetes.client.ApiException | urllib3.exceptions.HTTPError, doing: str) -> KubeError:
    """The `KubeError` for a failed request; `doing` completes "could not …" (e.g. "list nodes").

    404 and 409 mean different things to different callers, who check `err.status` first.
    """
    if isinstance(err, urllib3.exceptions.HTTPError):
        return ApiError(f"could not {doing}: the API server did not answer ({err}); it is retried next cycle")
    status = int(err.status or 0)
    if status == 0:
        return ApiError(f"could not {doing}: the API server did not answer ({err.reason}); it is retried next cycle")
    if status == 403:
        return Forbidden(
            f"the operator may not {doing} ({_server_message(err)}): grant it in its Role or ClusterRole "
            "(the Helm chart's rbac values)"
        )
    if status == 401:
        return ApiError(f"could not {doing}: the API server rejected the operator's credentials (HTTP 401)", status)
    return ApiError(f"could not {doing}: HTTP {status} from the API server: {_server_message(err)}", status)


def request(
    api: kubernetes.client.ApiClient,
    method: str,
    path: str,
    *,
    query: Sequence[tuple[str, str]] = (),
    body: Mapping[str, Any] | None = None,
) -> Any:
    """Blocking request to the API server; the raw response, read. Non-2xx raises `ApiException`.

    Through the client's own `param_serialize` and `call_api` (its host, TLS, auth and token
    refresh) but not the generated per-operation methods, whose argument validation and model
    plumbing cost a third of the client's CPU per request at 500 pools (bench/bench_operator.py).
    """
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    method, url, headers, payload, _ = api.param_serialize(
        method, path, query_params=list(query), header_params=headers, body=body, auth_settings=["BearerToken"]
    )
    response: Any = api.call_api(method, url, headers, payload, _request_timeout=REQUEST_TIMEOUT_S)
    response.read()
    if not 200 <= response.status <= 299:
        raise kubernetes.client.ApiException.from_response(http_resp=response, body=None, data=None)
    return response


def body_of(response: Any) -> dict[str, Any]:
    """The JSON object of a raw (`_preload_content=False`) response."""
    try:
        document = json.loads(response.data)
    except ValueError:
        raise ApiError(f"the API server answered with something that is not JSON: {response.data[:80]!r}") from None
    if not isinstance(document, dict):
        raise ApiError(f"the API server answered with JSON that is not an object: {str(document)[:80]}")
    return document


def list_items(
    list_call: Callable[..., Any],
    *args: str,
    label_selector: str = "",
    field_selector: str = "",
    from_cache: bool = True,
) -> Iterator[dict[str, Any]]:
    """Every item of a list call (blocking), page by page, as plain JSON objects.

    `list_call` is a generated list method (`CoreV1Api.list_node`, …); ApiException and urllib3
    errors propagate for the caller to `translate`. With `from_cache` (resourceVersion "0") the
    apiserver answers from its watch cache instead of a quorum read of etcd: the operator's pod and
    node lists run for every pool every interval, and read through etcd they dominated the
    apiserver's CPU at 500 pools (bench/bench_operator.py). The answer may be a moment old, which
    a 30 s control loop does not notice.
    """
    token: str | None = None
    while True:
        options: dict[str, Any] = {"_preload_content": False, "_request_timeout": REQUEST_TIMEOUT_S}
        if from_cache:
            options["resource_version"] = "0"  # the cache ignores `limit`: one page
        else:
            options["limit"] = PAGE_SIZE
        if label_selector:
            options["label_selector"] = label_selector
        if field_selector:
            options["field_selector"] = field_selector
        if token:
            options["_continue"] = token
        page = body_of(list_call(*args, **options))
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


# --- answers kept a while; discovery -----------------------------------------------------------

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedReads(Generic[K, V]):
    """Answers of a blocking read, per ApiClient and key: reused while young, shared while running.

    `get` returns the answer fetched at most `max_age_s` ago (seconds since its request started),
    or runs `fetch` on a worker thread; concurrent callers for the same key wait for one request,
    whatever their `max_age_s`, since it started after they asked. Failures are not kept. Entries
    are held per client in weak dictionaries, so clients never share them and they go with the
    client (no process-wide cache a test could leak into another).
    """

    def __init__(self) -> None:
        self._done: weakref.WeakKeyDictionary[Any, dict[K, tuple[float, V]]] = weakref.WeakKeyDictionary()
        self._running: weakref.WeakKeyDictionary[Any, dict[K, asyncio.Task[V]]] = weakref.WeakKeyDictionary()

    async def get(self, api: kubernetes.client.ApiClient, key: K, fetch: Callable[[], V], max_age_s: float) -> V:
        entry = self._done.get(api, {}).get(key)
        if entry is not None and time.monotonic() - entry[0] <= max_age_s:
            return entry[1]
        loop = asyncio.get_running_loop()
        running = self._running.setdefault(api, {})
        task = running.get(key)
        if task is None or task.get_loop() is not loop:
            started = time.monotonic()
            task = loop.create_task(asyncio.to_thread(fetch))
            running[key] = task
            done = self._done.setdefault(api, {})

            def finished(t: asyncio.Task[V]) -> None:
                if running.get(key) is t:
                    del running[key]
                if not t.cancelled() and t.exception() is None:
                    done[key] = (started, t.result())

            task.add_done_callback(finished)
        # One caller giving up (cancelled) does not cancel the request the others wait for.
        return await asyncio.shield(task)

    def forget(self, api: kubernetes.client.ApiClient, key: K) -> None:
        """Drop a kept answer, so the next `get` asks the server."""
        self._done.get(api, {}).pop(key, None)


_targets: SharedReads[tuple[str, str], TargetResource] = SharedReads()  # by (apiVersion, kind)


def _split_api_version(api_version: str, kind: str) -> tuple[str, str]:
    parts = api_version.split("/")
    if len(parts) == 1 and parts[0]:
        return "", parts[0]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise TargetKindUnknown(
        f"apiVersion {api_version!r} of kind {kind} is not <group>/<version> or <version> (e.g. apps/v1, v1)"
    )


def _discover(api: kubernetes.client.ApiClient, api_version: str, kind: str) -> TargetResource:
    """Blocking: the kind's resource from the group version's discovery document."""
    group, version = _split_api_version(api_version, kind)
    try:
        if group:
            raw = kubernetes.client.CustomObjectsApi(api).get_api_resources(
                group, version, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
            )
        else:
            raw = kubernetes.client.CoreV1Api(api).get_api_resources(
                _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
            )
        resources: list[dict[str, Any]] = body_of(raw).get("resources") or []
    except kubernetes.client.ApiException as err:
        if err.status == 404:
            resources = []  # the group version is not served at all
        else:
            raise translate(err, f"discover the resources of {api_version}") from None
    except urllib3.exceptions.HTTPError as err:
        raise translate(err, f"discover the resources of {api_version}") from None
    names = {str(r.get("name")) for r in resources}
    for r in resources:
        name = str(r.get("name"))
        if r.get("kind") == kind and "/" not in name:
            return TargetResource(
                api_version=api_version,
                kind=kind,
                group=group,
                version=version,
                plural=name,
                namespaced=bool(r.get("namespaced")),
                has_scale=f"{name}/scale" in names,
            )
    near = sorted({str(r.get("kind")) for r in resources if str(r.get("kind")).lower() == kind.lower()})
    hint = f" (did you mean {near[0]}?)" if near else ""
    raise TargetKindUnknown(f"no kind {kind} in apiVersion {api_version}{hint}: is its CRD installed?")


async def resolve_target(
    api: kubernetes.client.ApiClient,
    api_version: str,
    kind: str,
    *,
    require_scale: bool = True,
    max_age_s: float = DISCOVERY_TTL_S,
) -> TargetResource:
    """The resource of `kind` in `api_version`, from discovery, cached per client for `max_age_s`.

    Raises `TargetKindUnknown` when discovery has no such kind (not cached: a CRD installed later is
    found on the next call) and, when `require_scale`, `NoScaleSubresource` for a kind without
    `/scale`. Concurrent calls for the same kind share one discovery request.
    """
    target = await _targets.get(api, (api_version, kind), lambda: _discover(api, api_version, kind), max_age_s)
    if require_scale and not target.has_scale:
        raise NoScaleSubresource(
            f"{kind} ({api_version}) has no /scale subresource: tokenscale can only scale workloads that expose it "
            "(Deployment, StatefulSet, LeaderWorkerSet, a custom resource whose CRD declares subresources.scale)"
        )
    return target


def forget_target(api: kubernetes.client.ApiClient, api_version: str, kind: str) -> None:
    """Drop a cached resolution, so the next call asks discovery again (after a 404, say)."""
    _targets.forget(api, (api_version, kind))


# --- /scale ------------------------------------------------------------------------------------


def _where(target: TargetResource, namespace: str, name: str) -> str:
    return f"{target.kind} {namespace}/{name}"


def _path(target: TargetResource, namespace: str, name: str) -> str:
    """The object's URL path: `/apis/<group>/<version>/…`, or `/api/<version>/…` in the core group."""
    root = f"/apis/{target.group}/{target.version}" if target.group else f"/api/{target.version}"
    return f"{root}/namespaces/{namespace}/{target.plural}/{name}"


def _get(
    api: kubernetes.client.ApiClient, target: TargetResource, namespace: str, name: str, suffix: str, from_cache: bool
) -> dict[str, Any]:
    """Blocking GET of the object (`suffix` "") or its `/scale`; a 404 is `TargetNotFound`.

    `from_cache` reads at resourceVersion "0", from the apiserver's watch cache: 0.6 ms of its CPU
    instead of 1.7 ms for a quorum read of etcd (bench); a moment old, which a 30 s loop does not
    notice, and a write made on a stale version is a 409 that `write_scale` retries on a fresh read.
    A moment old also means an object created a moment ago may not be in it yet, so a 404 from the
    cache is asked again of etcd before it is `TargetNotFound`.
    """
    what = f"{target.plural}{suffix} of {_where(target, namespace, name)}"
    try:
        query = [("resourceVersion", "0")] if from_cache else []
        return body_of(request(api, "GET", _path(target, namespace, name) + suffix, query=query))
    except kubernetes.client.ApiException as err:
        if err.status == 404 and from_cache:
            return _get(api, target, namespace, name, suffix, from_cache=False)
        if err.status == 404:
            raise TargetNotFound(
                f"{_where(target, namespace, name)} ({target.api_version}) was not found: create it, or fix "
                "scaleTargetRef"
            ) from None
        raise translate(err, f"read {what}") from None
    except urllib3.exceptions.HTTPError as err:
        raise translate(err, f"read {what}") from None


class _Conflict(Exception):
    """A 409 on the replace: someone wrote the target since it was read."""


def _put_scale(
    api: kubernetes.client.ApiClient, target: TargetResource, namespace: str, name: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Blocking PUT of `/scale`; the body carries the resourceVersion it was read at."""
    what = f"update {target.plural}/scale of {_where(target, namespace, name)}"
    try:
        return body_of(request(api, "PUT", _path(target, namespace, name) + "/scale", body=body))
    except kubernetes.client.ApiException as err:
        if err.status == 409:
            raise _Conflict() from None
        if err.status == 404:
            raise TargetNotFound(
                f"{_where(target, namespace, name)} ({target.api_version}) was deleted while it was being scaled"
            ) from None
        raise translate(err, what) from None
    except urllib3.exceptions.HTTPError as err:
        raise translate(err, what) from None


def _state(scale: Mapping[str, Any], attempts: int = 1) -> ScaleState:
    """The Scale object's numbers, before its pods are counted."""
    spec = scale.get("spec") or {}
    status = scale.get("status") or {}
    return ScaleState(
        replicas=int(spec.get("replicas") or 0),
        status_replicas=int(status.get("replicas") or 0),
        selector=str(status.get("selector") or ""),
        ready_replicas=0,
        ready_counted=False,
        resource_version=str((scale.get("metadata") or {}).get("resourceVersion") or ""),
        attempts=attempts,
    )


def _is_ready(pod: Mapping[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


# Kinds whose controllers keep status.readyReplicas and, being Go `omitempty`, leave it out at zero.
READY_IN_STATUS = frozenset(
    {
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("apps", "ReplicaSet"),
        ("leaderworkerset.x-k8s.io", "LeaderWorkerSet"),
    }
)


def _with_ready(
    api: kubernetes.client.ApiClient, target: TargetResource, namespace: str, name: str, state: ScaleState
) -> ScaleState:
    """Blocking: `state` with its ready replicas, from the workload's status or its pods.

    Workload controllers keep `status.readyReplicas` (Deployment, StatefulSet, ReplicaSet,
    LeaderWorkerSet, most custom workloads): reading it is one cached GET, 0.6 ms of apiserver CPU,
    where listing the selector's pods makes the apiserver scan every pod of the namespace, 9 ms at
    4,500 pods, for every pool and cycle (bench/bench_operator.py). A workload whose status has no
    `readyReplicas` (and is not a kind known to omit it at zero) gets its pods counted.
    """
    workload = _get(api, target, namespace, name, "", from_cache=True)
    ready = (workload.get("status") or {}).get("readyReplicas")
    if isinstance(ready, int) or (target.group, target.kind) in READY_IN_STATUS:
        return replace(state, ready_replicas=int(ready or 0), ready_counted=True)
    return _count_ready(api, namespace, state)


def _count_ready(api: kubernetes.client.ApiClient, namespace: str, state: ScaleState) -> ScaleState:
    """Blocking: `state` with its ready pods counted (none counted when it has no selector)."""
    if not state.selector:
        return state  # an empty selector would match every pod of the namespace
    core = kubernetes.client.CoreV1Api(api)
    try:
        ready = sum(
            1
            for pod in list_items(core.list_namespaced_pod, namespace, label_selector=state.selector)
            if _is_ready(pod)
        )
    except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError) as err:
        raise translate(err, f"list pods matching {state.selector!r} in namespace {namespace}") from None
    return replace(state, ready_replicas=ready, ready_counted=True)


async def _target_of(api: kubernetes.client.ApiClient, ref: ScaleTargetRef) -> TargetResource:
    target = await resolve_target(api, ref.api_version, ref.kind)
    if not target.namespaced:
        raise TargetNotNamespaced(
            f"{ref.kind} ({ref.api_version}) is cluster-scoped: scaleTargetRef must name a workload in the pool's "
            "namespace"
        )
    return target


async def read_scale(api: kubernetes.client.ApiClient, namespace: str, ref: ScaleTargetRef) -> ScaleState:
    """The target's `/scale` and its ready pods.

    Raises `TargetKindUnknown`, `NoScaleSubresource`, `TargetNotNamespaced`, `TargetNotFound`
    (forgetting the cached discovery, in case the kind itself went away), `Forbidden` or `ApiError`.
    """
    target = await _target_of(api, ref)

    def read() -> ScaleState:
        scale = _get(api, target, namespace, ref.name, "/scale", from_cache=True)
        return _with_ready(api, target, namespace, ref.name, _state(scale))

    try:
        return await asyncio.to_thread(read)
    except TargetNotFound:
        forget_target(api, ref.api_version, ref.kind)
        raise


async def write_scale(
    api: kubernetes.client.ApiClient,
    namespace: str,
    ref: ScaleTargetRef,
    replicas: int,
    *,
    attempts: int = WRITE_ATTEMPTS,
    on_read: Callable[[int], None] | None = None,
) -> ScaleState:
    """Set the target's replicas through `/scale` and return the state written.

    Read-modify-write: the Scale is read and replaced with the resourceVersion it was read at, so a
    concurrent writer makes the replace fail with 409 Conflict; then it is read afresh and replaced
    again after a short pause, up to `attempts` rounds in all (`ApiError` after that). When the target already has
    `replicas`, nothing is written. The result's `attempts` says how many rounds it took.

    `on_read(round)` is a test seam: it is called on the worker thread right after each read,
    before the replace (round 1, 2, …), so a test can change the target in between and provoke a
    real 409. Production callers leave it None.
    """
    if replicas < 0:
        raise ValueError(f"replicas must be >= 0, not {replicas}")
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, not {attempts}")
    target = await _target_of(api, ref)
    where = _where(target, namespace, ref.name)

    def read_modify_write() -> ScaleState:
        for round_ in range(1, attempts + 1):
            scale = _get(api, target, namespace, ref.name, "/scale", from_cache=False)
            if on_read is not None:
                on_read(round_)
            if _state(scale).replicas == replicas:
                return _with_ready(api, target, namespace, ref.name, _state(scale, round_))
            body = {**scale, "spec": {**(scale.get("spec") or {}), "replicas": replicas}}
            try:
                written = _put_scale(api, target, namespace, ref.name, body)
            except _Conflict:
                time.sleep(CONFLICT_BACKOFF_S * round_)  # on this worker thread, not the event loop
                continue
            return _with_ready(api, target, namespace, ref.name, _state(written, round_))
        raise ApiError(
            f"could not update {target.plural}/scale of {where}: it changed under every one of {attempts} "
            "attempts (409 Conflict); another controller may be scaling it too, such as a HorizontalPodAutoscaler",
            409,
        )

    try:
        return await asyncio.to_thread(read_modify_write)
    except TargetNotFound:
        forget_target(api, ref.api_version, ref.kind)
        raise
