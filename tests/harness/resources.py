"""Objects the e2e tests create on the test apiserver: CRDs, namespaces, and their error details.

`apply_crd` creates or replaces a CustomResourceDefinition from its manifest through the Python
client's `ApiextensionsV1Api` (kubectl's client-side validation rejects `x-kubernetes-validations`
on a 1.20 server, which itself drops those rules silently) and waits until it is Established and
served. Requests and answers stay plain JSON, so the manifest and the stored object are compared as
written rather than through the client's model classes (whose shape changes between client
versions). Used by tests/conftest.py and tests/e2e/.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from typing import Any, cast

import kubernetes
from kubernetes.client.exceptions import ApiException

from harness.wait import wait_until


def _condition(obj: Mapping[str, Any], kind: str) -> str | None:
    for condition in obj.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return None


def _read_crd(extensions: kubernetes.client.ApiextensionsV1Api, name: str) -> dict[str, Any]:
    # Raw JSON (`_preload_content=False`): the client's typing says "model" whatever that flag says.
    read: Callable[..., Any] = extensions.read_custom_resource_definition
    return cast(dict[str, Any], json.loads(read(name, _preload_content=False).data))


def apply_crd(
    api_client: kubernetes.client.ApiClient, manifest: Mapping[str, Any], *, timeout_s: float = 60.0
) -> dict[str, Any]:
    """Create (or replace) a CRD, wait until it is Established and its group versions are served.

    Goes through `ApiextensionsV1Api` with the manifest as plain JSON; returns the CRD as the server
    stored it (plain JSON, not the client's model classes).
    """
    extensions = kubernetes.client.ApiextensionsV1Api(api_client)
    objects = kubernetes.client.CustomObjectsApi(api_client)
    name = manifest["metadata"]["name"]
    # The client accepts plain dicts as bodies; its typing asks for the model classes.
    create: Callable[..., Any] = extensions.create_custom_resource_definition
    replace: Callable[..., Any] = extensions.replace_custom_resource_definition
    try:
        create(dict(manifest), _preload_content=False)
    except ApiException as err:
        if err.status != 409:
            raise
        current = _read_crd(extensions, name)
        metadata = {**manifest["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}
        replace(name, {**manifest, "metadata": metadata}, _preload_content=False)

    def established() -> dict[str, Any] | None:
        stored = _read_crd(extensions, name)
        return stored if _condition(stored, "Established") == "True" else None

    stored = wait_until(established, what=f"CRD {name} to be Established", timeout_s=timeout_s, interval_s=0.2)
    group, plural = stored["spec"]["group"], stored["spec"]["names"]["plural"]
    for version in (v["name"] for v in stored["spec"]["versions"] if v.get("served")):

        def served(version: str = version) -> bool:
            resources = objects.get_api_resources(group, version).resources or []
            return any(r.name == plural for r in resources)

        wait_until(
            served,
            what=f"{plural} in discovery of {group}/{version}",
            timeout_s=timeout_s,
            interval_s=0.2,
            retry_on=(ApiException,),
        )
    return stored


def create_namespace(api_client: kubernetes.client.ApiClient, prefix: str = "t") -> str:
    """A new namespace with a random name under `prefix`; the caller deletes it."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    kubernetes.client.CoreV1Api(api_client).create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
    )
    return name


def delete_namespace(api_client: kubernetes.client.ApiClient, name: str) -> None:
    """Ask for deletion and return; the controller manager's namespace controller empties it."""
    try:
        kubernetes.client.CoreV1Api(api_client).delete_namespace(name)
    except ApiException as err:
        if err.status != 404:
            raise


def api_error_causes(err: ApiException) -> list[dict[str, str]]:
    """The `details.causes` of a Status error body (field, reason, message), or [] if there are none."""
    if not err.body:
        return []
    try:
        status = json.loads(err.body)
    except ValueError:
        return []
    causes: list[dict[str, str]] = status.get("details", {}).get("causes", [])
    return causes


def wait_for_pod_admission(api_client: kubernetes.client.ApiClient, namespace: str, timeout_s: float = 60.0) -> None:
    """Wait until the namespace's default ServiceAccount has its token: until then the ServiceAccount
    admission plugin refuses pods created directly (controllers retry; a test would fail)."""
    core = kubernetes.client.CoreV1Api(api_client)

    def token_ready() -> bool:
        try:
            return bool(core.read_namespaced_service_account("default", namespace).secrets)
        except ApiException as err:
            if err.status == 404:
                return False
            raise

    wait_until(
        token_ready, what=f"the default ServiceAccount token in {namespace}", timeout_s=timeout_s, interval_s=0.1
    )
