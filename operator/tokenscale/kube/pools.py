"""InferencePool status writes and the Secrets and ConfigMaps a pool refers to.

Called by `reconcile`. The `kubernetes` client is synchronous, so every call runs on a worker
thread (`asyncio.to_thread`) and the event loop never waits on the API server. Status is written
with a replace of the `status` subresource, so fields the new status drops are removed; a 409
Conflict is retried with a fresh read a bounded number of times (STYLE.md §20).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any, cast

import kubernetes
import urllib3

from tokenscale.api import GROUP, KIND, PLURAL, VERSION, ConfigMapKeyRef, SecretKeyRef
from tokenscale.kube.scale import KubeError, translate
from tokenscale.planner.reasons import Reason


class MissingReference(KubeError):
    """A Secret or ConfigMap the pool names is missing or lacks the key; `reason` is CamelCase."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message, reason)


async def write_status(
    api: kubernetes.client.ApiClient,
    namespace: str,
    name: str,
    status: Mapping[str, Any],
    resource_version: str,
    attempts: int = 5,
) -> bool:
    """Replace the pool's status; False when the pool is gone.

    The replace carries `resource_version`, the version of the object the status was computed from
    (kopf's view of it), so the common case is one request. A 409 Conflict means the pool changed
    since (its spec was edited, say): the pool is read afresh and the status replaced on that
    version, up to `attempts` rounds.
    """
    custom = kubernetes.client.CustomObjectsApi(api)

    def attempt() -> bool:
        try:
            return replace_status()
        except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError) as err:
            raise translate(err, f"write the status of InferencePool {namespace}/{name}") from None

    def replace_status() -> bool:
        version = resource_version
        for i in range(attempts):
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "metadata": {"name": name, "namespace": namespace, "resourceVersion": version},
                "status": dict(status),
            }
            try:
                custom.replace_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, body)
                return True
            except kubernetes.client.ApiException as err:
                if err.status == 404:
                    return False
                if err.status != 409 or i == attempts - 1:
                    raise
            try:
                fresh = cast(
                    dict[str, Any], custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
                )
            except kubernetes.client.ApiException as err:
                if err.status == 404:
                    return False
                raise
            version = str(fresh["metadata"]["resourceVersion"])
        return False

    return await asyncio.to_thread(attempt)


async def read_secret_key(api: kubernetes.client.ApiClient, namespace: str, ref: SecretKeyRef) -> str:
    """The decoded value of one key of a Secret in the pool's namespace."""
    core = kubernetes.client.CoreV1Api(api)
    try:
        secret = await asyncio.to_thread(core.read_namespaced_secret, ref.name, namespace)
    except kubernetes.client.ApiException as err:
        if err.status in (403, 404):
            raise MissingReference(
                Reason.SECRET_NOT_FOUND if err.status == 404 else Reason.SECRET_FORBIDDEN,
                f"cannot read Secret {namespace}/{ref.name} ({err.reason}): create it or grant the operator get on it",
            ) from None
        raise translate(err, f"read Secret {namespace}/{ref.name}") from None
    except urllib3.exceptions.HTTPError as err:
        raise translate(err, f"read Secret {namespace}/{ref.name}") from None
    data = secret.data or {}
    if ref.key not in data:
        raise MissingReference(Reason.SECRET_KEY_MISSING, f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
    return base64.b64decode(data[ref.key]).decode("utf-8").strip()


async def read_configmap_key(api: kubernetes.client.ApiClient, namespace: str, ref: ConfigMapKeyRef) -> str:
    """The text of one key of a ConfigMap in the pool's namespace."""
    core = kubernetes.client.CoreV1Api(api)
    try:
        config_map = await asyncio.to_thread(core.read_namespaced_config_map, ref.name, namespace)
    except kubernetes.client.ApiException as err:
        if err.status in (403, 404):
            raise MissingReference(
                Reason.CONFIG_MAP_NOT_FOUND if err.status == 404 else Reason.CONFIG_MAP_FORBIDDEN,
                f"cannot read ConfigMap {namespace}/{ref.name} ({err.reason}): "
                + (
                    "create it or fix performance.configMapRef" if err.status == 404 else "grant the operator get on it"
                ),
            ) from None
        raise translate(err, f"read ConfigMap {namespace}/{ref.name}") from None
    except urllib3.exceptions.HTTPError as err:
        raise translate(err, f"read ConfigMap {namespace}/{ref.name}") from None
    data = config_map.data or {}
    if ref.key not in data:
        raise MissingReference(
            Reason.CONFIG_MAP_KEY_MISSING, f"ConfigMap {namespace}/{ref.name} has no key {ref.key!r}"
        )
    return str(data[ref.key])
